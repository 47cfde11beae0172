"""Rows of the bad-input table (docs/reliability.md) not already tested elsewhere.

Each user mistake gets exactly one line `error: ...` on stderr and exit status 2. Rows covered by
tests/test_bad_input.py, test_launch_sweep.py, test_launch_local.py, test_xpk.py and
test_report.py are listed in the table with their test and not repeated here.
"""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import gin
import jax
import numpy as np
import pytest

from harness import __main__ as harness_cli
from harness import api, run, run_folder, steps
from harness.checkpoint import Checkpointer
from launch.__main__ import main as launch_cli

REPO = pathlib.Path(__file__).resolve().parent.parent
QUICK = f"--gin_file={REPO / 'gin' / 'quickstart.gin'}"

RUN_NAME_RULE = ("must be a plain folder name (not '.' or '..', no '/' or '\\', no leading '-', "
                 "no control characters)")
SEED_WHY = "(JAX uses a seed's low 32 bits only: others would repeat these)"
PATCH_RULE = "must be 3 positive integers (frames, height, width), e.g. (1, 2, 2)"

# (bindings, the message after "error: "); checked by --dry_run, which allocates nothing.
DRY_RUN_ROWS = [
    ("run.warmup_steps=20", "run.warmup_steps=20: must be >= 0 and < run.steps=20"),
    ("run.batch_size=0", "run.batch_size=0: must be > 0"),
    ("run.checkpoint_every=-1", "run.checkpoint_every=-1: must be >= 0 (0 = never)"),
    ("run.run_name='a/b'", f"run.run_name='a/b': {RUN_NAME_RULE}"),
    ("run.run_name='..'", f"run.run_name='..': {RUN_NAME_RULE}"),
    ("run.run_name='.'", f"run.run_name='.': {RUN_NAME_RULE}"),
    ("run.seed=9223372036854775808", "run.seed=9223372036854775808: must be in "
                                     f"[-2147483648, 2147483647] {SEED_WHY}"),
    ("run.seed=-2147483649",
     f"run.seed=-2147483649: must be in [-2147483648, 2147483647] {SEED_WHY}"),
    ("run.seed=2**63", "cannot parse gin binding 'run.seed=2**63': Expected newline. (values are "
                       "Python literals: numbers, 'quoted strings', lists, tuples, dicts, True, "
                       "False, None, @references, %MACROS)"),
    ("run.mode='trian'", "run.mode='trian': choose one of train, eval, aot; did you mean 'train'?"),
    ("attention.variant=ring", "strings need quotes: attention.variant='ring' "
                               "(bindings string line 1)"),
    ("attention.varient='ring'", "Configurable 'attention' doesn't have a parameter named "
                                 "'varient'; did you mean 'variant'? (bindings string line 1)"),
    ("attenshun.variant='ring'", "No configurable matching 'attenshun'; did you mean "
                                 "'attention'? (bindings string line 1)"),
    ("foo.bar=1", "No configurable matching 'foo'; valid configurables: run, mesh, hardware, "
                  "attention, model, video, optimizer, sampler, profiler, aot (bindings string "
                  "line 1)"),
    ("run.stepz=3", "Configurable 'run' doesn't have a parameter named 'stepz'; did you mean "
                    "'steps'? (bindings string line 1)"),
    ("sampler.zzz=1", "Configurable 'sampler' doesn't have a parameter named 'zzz'; valid "
                      "parameters: denoising_steps, guidance_scale, shift (bindings string line 1)"),
    ("run.steps=%UNDEFINED", "run.steps=%UNDEFINED: macro UNDEFINED is not defined; define it "
                             "with a binding 'UNDEFINED = value' (bindings string line 1)"),
    ("import pwn", "gin 'import pwn' is refused: only the project's own modules (harness.*) may "
                   "be imported (bindings string line 1)"),
    ("mesh.context=0", "mesh.context=0: axis sizes must be positive or -1 (the rest)"),
    ("mesh.data=-1",
     "mesh.data and mesh.context are both -1: at most one axis may take the rest"),
    ("mesh.data=3", "mesh.context=-1 cannot take the rest: the other axes multiply to 3, "
                    "which does not divide the 8 devices"),
    ("mesh.data=2", "run.batch_size=1 is not divisible by mesh.data*mesh.fsdp=2"),
    ("sampler.denoising_steps=0", "sampler.denoising_steps=0: must be > 0"),
    ("attention.variant='ulises'", "attention.variant='ulises' is invalid; valid choices: "
                                   "'dense', 'ulysses', 'ring', 'ulysses_ring', 'gspmd_heads', "
                                   "'all_gather'; did you mean 'ulysses'?"),
    ("attention.kernel='splsh'", "attention.kernel='splsh' is invalid; valid choices: "
                                 "'xla', 'blockwise', 'splash', 'cudnn'; did you mean 'splash'?"),
    ("attention.kernel='flash'", "attention.kernel='flash' is invalid; valid choices: "
                                 "'xla', 'blockwise', 'splash', 'cudnn'; did you mean 'splash'?"),
    ("attention.variant='dense'", "attention.num_chunks=2 needs attention.variant in "
                                  "('ulysses', 'ulysses_ring'); variant 'dense' takes "
                                  "attention.num_chunks=1"),
    ("attention.ulysses_degree=2", "attention.ulysses_degree=2 is invalid for variant 'ulysses' "
                                   "(it uses mesh.context=8); valid choices: None, 8"),
    ("attention.num_chunks=2.0", "attention.num_chunks=2.0: expected int"),
    ("run.steps='12'", "run.steps='12': expected int"),
    ("profiler.num_steps=0", "profiler.num_steps=0: must be >= 1 when profiler.enabled"),
    ("video.frames=6", "video.frames=6: must be 4k+1 (e.g. 5, 17, 81)"),
    ("video.height=60", "video.height=60: must be a multiple of 16"),
    ("model.dim=250", "model.dim=250 is not a multiple of model.num_heads=16"),
    ("model.dtype='float16'", "model.dtype='float16': choose 'float32' or 'bfloat16'; did you "
                              "mean 'bfloat16'?"),
    ("model.num_heads=0", "model.num_heads=0: must be a positive integer"),
    ("model.dim=0", "model.dim=0: must be a positive integer"),
    ("model.patch=(1, 0, 2)", f"model.patch=(1, 0, 2): {PATCH_RULE}"),
    ("model.patch=(1, 'a', 2)", f"model.patch=(1, 'a', 2): {PATCH_RULE}"),
    ("video.height=0", "video.height=0: must be a positive integer"),
    ("video.width=-16", "video.width=-16: must be a positive integer"),
    ("mesh.data=-2", "mesh.data=-2: axis sizes must be positive or -1 (the rest)"),
    ("mesh.num_processes=0", "mesh.num_processes=0: must be > 0"),
]


def _harness_error(capsys, argv: list[str]) -> str:
  """Runs the harness CLI in-process; the one stderr line of a user mistake."""
  rc = harness_cli.main(argv)
  err = capsys.readouterr().err
  assert rc == 2, err
  assert err.count("\n") == 1 and err.startswith("error: "), err
  return err.strip()[len("error: "):]


def test_an_internal_error_keeps_its_traceback(monkeypatch):
  """Only a UserError becomes one line: a ValueError from a bug propagates with its traceback."""
  def broken(*args, **kwargs):
    raise ValueError("a bug, not a user mistake")

  monkeypatch.setattr(harness_cli.run, "main", broken)
  with pytest.raises(ValueError, match="^a bug, not a user mistake$"):
    harness_cli.main([QUICK])


@pytest.mark.parametrize("binding, message", DRY_RUN_ROWS, ids=[b for b, _ in DRY_RUN_ROWS])
def test_harness_config_mistakes(capsys, binding, message):
  assert _harness_error(capsys, [QUICK, "--dry_run", f"--gin_bindings={binding}"]) == message


def test_no_gin_file(capsys):
  assert _harness_error(capsys, []) == (
      "give at least one --gin_file (e.g. --gin_file=gin/quickstart.gin)")


def test_aot_step_name(capsys):
  assert _harness_error(capsys, [QUICK, "--dry_run", "--gin_bindings=run.mode='aot'",
                                 "--gin_bindings=aot.step='fwd'"]) == (
      "aot.step='fwd' is invalid; valid choices: 'train', 'eval'")


@pytest.mark.parametrize("bindings, message", [
    (["mesh.coordinator_address='127.0.0.1:1234'"],
     "mesh.coordinator_address needs mesh.num_processes and mesh.process_id too"),
    (["mesh.coordinator_address='127.0.0.1:1234'", "mesh.num_processes=2", "mesh.process_id=2"],
     "mesh.process_id=2: must be in [0, mesh.num_processes=2), one distinct id per process"),
    (["mesh.simulated_devices=0"], "mesh.simulated_devices=0: must be > 0"),
    (["mesh.coordinator_address='127.0.0.1'", "mesh.num_processes=2", "mesh.process_id=1"],
     "mesh.coordinator_address='127.0.0.1': expected HOST:PORT (e.g. '10.0.0.2:1234')"),
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this host.
    (["mesh.coordinator_address='192.0.2.1:1234'", "mesh.num_processes=2", "mesh.process_id=0"],
     "mesh.coordinator_address='192.0.2.1:1234': process 0 cannot listen on '192.0.2.1' "
     "(Cannot assign requested address); give an address of this host, or set "
     "JAX_COORDINATOR_BIND_ADDRESS='[::]:PORT' to listen on every interface"),
], ids=["coordinator-alone", "process-id-range", "simulated-devices-0", "coordinator-no-port",
        "coordinator-not-here"])
def test_device_setup_mistakes(capsys, tmp_path, bindings, message):
  argv = [QUICK, f"--gin_bindings=run.output_dir='{tmp_path}'",
          *(f"--gin_bindings={b}" for b in bindings)]
  assert _harness_error(capsys, argv) == message
  assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_output_dir_that_is_a_file(capsys, tmp_path):
  blocker = tmp_path / "results"
  blocker.write_text("")
  argv = [QUICK, f"--gin_bindings=run.output_dir='{blocker}'"]
  assert _harness_error(capsys, argv) == (
      f"run.output_dir='{blocker}': cannot create {blocker}/quickstart (Not a directory)")


def test_profiler_window_without_steps(capsys, tmp_path):
  argv = [QUICK, f"--gin_bindings=run.output_dir='{tmp_path}'",
          "--gin_bindings=profiler.num_steps=0"]
  assert _harness_error(capsys, argv) == (
      "profiler.num_steps=0: must be >= 1 when profiler.enabled")


def _save_zero_checkpoint(run_dir: pathlib.Path, bindings: list[str]) -> None:
  """A checkpoint at step 3 of the quickstart state under other bindings (no step compiled)."""
  loaded = api.load([QUICK.split("=", 1)[1]], bindings)
  cfgs, mesh = loaded.configs, loaded.mesh
  params, opt_state = steps.abstract_train_args(loaded.program, cfgs.setup, mesh)[:2]
  zeros = jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype), s.sharding),
                       {"params": params, "opt_state": opt_state})
  ckpt = Checkpointer(run_dir / "checkpoints", every=1)
  ckpt.maybe_save(3, zeros, force=True)
  ckpt.close()
  gin.clear_config()


def _write_run_record(run_dir: pathlib.Path, bindings: list[str]) -> None:
  """The run.json a quickstart run under `bindings` leaves (its identity; no attempt ended)."""
  loaded = api.load([QUICK.split("=", 1)[1]], bindings)
  claim = run_folder.claim(run_dir, run.identity(loaded.configs), "train",
                           run._placement(loaded.configs, loaded.mesh), {"steps": 4}, True)
  run_folder.save_record(claim)
  gin.clear_config()


def test_resume_with_another_config(capsys, tmp_path):
  run_dir = tmp_path / "quickstart"
  _write_run_record(run_dir, ["model.num_layers=1", "optimizer.learning_rate=0.1"])
  argv = [QUICK, f"--gin_bindings=run.output_dir='{tmp_path}'", "--gin_bindings=run.steps=4",
          "--gin_bindings=profiler.enabled=False"]
  assert _harness_error(capsys, argv) == (
      f"{run_dir} holds a run of another config (model.num_layers: 1 there, 2 here; "
      "optimizer.learning_rate: 0.1 there, 0.003 here); choose another run.run_name, or set "
      "run.resume=False to move that run aside")
  assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "run.json"]  # nothing written


def test_resume_from_a_checkpoint_of_another_model(capsys, tmp_path):
  run_dir = tmp_path / "quickstart"
  _write_run_record(run_dir, ["profiler.enabled=False"])
  _save_zero_checkpoint(run_dir, ["model.num_layers=1"])
  argv = [QUICK, f"--gin_bindings=run.output_dir='{tmp_path}'", "--gin_bindings=run.steps=4",
          "--gin_bindings=profiler.enabled=False"]
  assert _harness_error(capsys, argv) == (
      f"run.resume=True: checkpoint {run_dir}/checkpoints/3 was written by another config "
      "(params/blocks/cross_attn/k/bias/value has shape (1, 256) there, (2, 256) here); "
      "set run.resume=False to start afresh (the old run is moved aside) or choose "
      "another run.run_name")


@pytest.mark.slow
def test_a_peer_that_never_starts_ends_the_run_at_init_timeout(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  argv = [sys.executable, "-m", "harness", QUICK, "--gin_bindings=mesh.simulated_devices=4",
          f"--gin_bindings=mesh.coordinator_address='127.0.0.1:{port}'",
          "--gin_bindings=mesh.num_processes=2", "--gin_bindings=mesh.process_id=0",
          "--gin_bindings=mesh.init_timeout_s=2", f"--gin_bindings=run.output_dir='{tmp_path}'"]
  start = time.monotonic()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)
  took_s = time.monotonic() - start
  # JAX's coordination client aborts the process; no Python code runs after it.
  assert proc.returncode == -signal.SIGABRT, proc.stderr[-2000:]
  assert ("Terminating process because the JAX distributed service detected fatal errors"
          in proc.stderr and "DEADLINE_EXCEEDED" in proc.stderr), proc.stderr[-2000:]
  assert took_s < 60
  assert list(tmp_path.iterdir()) == []


def _experiment(tmp_path: pathlib.Path, body: str) -> str:
  path = tmp_path / "e.gin"
  path.write_text(body)
  return str(path)


GRID = "sweep.grid = {'attention.num_chunks': [1]}\n"


@pytest.mark.parametrize("body, flags, message", [
    ("include 'nope.gin'\n" + GRID, ["--dry_run"], "{exp}: include 'nope.gin' not found"),
    (GRID + "sweep.hardware = ['v5p-8']", ["--dry_run"],
     "sweep.hardware entry 'v5p-8': expected a dict with keys from name, tpu_type, num_slices, "
     "gin, bindings"),
    (GRID + "sweep.bindings = 3", ["--dry_run"], "sweep.bindings=3: expected a list"),
    ("sweep.grid = {'attention.variant': [\n    ring]}\n", ["--dry_run"],
     "{exp}, line 2: strings need quotes: write 'ring', not ring"),
    (GRID + "sweep.hardware = {'tpu_type': 'v5p-8'}",
     ["--backend", "xpk", "--cluster", "c", "--docker_image", "i", "--xpk", "/nonexistent/xpk",
      "--no_progress"],
     "--xpk=/nonexistent/xpk: no such executable (pip install xpk==1.16.0 in its own "
     "virtualenv and pass its path)"),
], ids=["include-missing", "hardware-not-dict", "bindings-not-list", "unquoted", "xpk-missing"])
def test_launcher_mistakes(capsys, tmp_path, body, flags, message):
  exp = _experiment(tmp_path, body)
  rc = launch_cli(["--experiment", exp, "--skip_binding_check",
                   "--results_dir", str(tmp_path / "res"), *flags])
  err = capsys.readouterr().err
  assert rc == 2 and err == f"error: {message.format(exp=exp)}\n", err


@pytest.mark.parametrize("flags, message", [
    (["--backend", "tpu"], "argument --backend: invalid choice: 'tpu' "
                           "(choose from 'local', 'xpk', 'aot')"),
    (["--backend", "xpk", "--priority", "urgent"],
     "argument --priority: invalid choice: 'urgent' (choose from 'very-low', 'low', 'medium', "
     "'high', 'very-high')"),
], ids=["backend", "priority"])
def test_launcher_flag_mistakes(capsys, tmp_path, flags, message):
  with pytest.raises(SystemExit) as info:
    launch_cli(["--experiment", _experiment(tmp_path, GRID), *flags])
  assert info.value.code == 2
  assert capsys.readouterr().err.splitlines()[-1] == f"python -m launch: error: {message}"


def _bad_input_rows(path: pathlib.Path, heading: str) -> list[str]:
  """The table rows under `heading` (up to the next heading of any level)."""
  text = path.read_text().split(f"\n{heading}\n", 1)[1]
  section = text.split("\n#", 1)[0]
  return [ln for ln in section.splitlines() if ln.startswith("| ") and "---" not in ln][1:]


def test_readme_and_reliability_doc_list_the_same_mistakes_with_existing_tests():
  rows = _bad_input_rows(REPO / "README.md", "### Bad input")
  assert len(rows) > 50  # the table was found
  assert rows == _bad_input_rows(REPO / "docs" / "reliability.md", "## Bad input")
  for row in rows:
    tests = row.rstrip(" |").rsplit("|", 1)[1].replace(",", " ").split()
    assert tests and all((REPO / "tests" / t).is_file() for t in tests), row
