"""Preemption, crash and NaN: real `python -m harness` runs, stopped the way a cluster stops them.

Each run is a subprocess in its own working folder with its own TMPDIR, so the tests can also
check that nothing is written outside {output_dir}/{run_name} and no temporary file survives.
Compiles are shared through JAX's persistent compilation cache (it works on CPU in 0.10.2).
"""
from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
RUN_NAME = "rel"
# Small but real: the quickstart model and chunked Ulysses, 12 steps, a checkpoint every 4.
BASE_BINDINGS = ("run.steps=12", "run.checkpoint_every=4", "profiler.enabled=False",
                 "run.final_eval=False", "run.progress=False", f"run.run_name='{RUN_NAME}'",
                 "run.output_dir='out'")
RUN_TIMEOUT_S = 240
SEED = int(os.environ.get("RELIABILITY_SEED", "20260507"))


def harness_env(tmp_root: pathlib.Path, cache: pathlib.Path) -> dict[str, str]:
  """The parent's environment with the compile cache on, a private TMPDIR and no device flag.

  The harness picks its device count from mesh.simulated_devices; the conftest's XLA_FLAGS
  would otherwise leak into the children and into the NaN message.
  """
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags)
  env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", TMPDIR=str(tmp_root),
             PYTHONUNBUFFERED="1")
  env.pop("LIBTPU_INIT_ARGS", None)
  return env


def shared_cache() -> pathlib.Path:
  """The session's compilation cache (tests/conftest.py), shared by every worker and harness run."""
  return pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"])


class Workdir:
  """A working folder, a TMPDIR and the command line of one harness run inside them."""

  def __init__(self, root: pathlib.Path, cache: pathlib.Path):
    self.cwd = root / "cwd"
    self.tmp = root / "tmpdir"
    self.cwd.mkdir(parents=True)
    self.tmp.mkdir()
    self.env = harness_env(self.tmp, cache)
    self.run_dir = self.cwd / "out" / RUN_NAME

  def command(self, *bindings: str, flags: tuple[str, ...] = ()) -> list[str]:
    gin_file = REPO / "gin" / "quickstart.gin"
    return [sys.executable, "-m", "harness", f"--gin_file={gin_file}", *flags,
            *(f"--gin_bindings={b}" for b in (*BASE_BINDINGS, *bindings))]

  def run(self, *bindings: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(self.command(*bindings, flags=flags), cwd=self.cwd, env=self.env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          check=False)

  def start(self, *bindings: str) -> subprocess.Popen:
    return subprocess.Popen(self.command(*bindings), cwd=self.cwd, env=self.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

  def records(self) -> list[dict]:
    path = self.run_dir / "metrics.jsonl"
    if not path.exists():
      return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]

  def summary(self) -> dict:
    return json.loads((self.run_dir / "summary.json").read_text())

  def checkpoints(self) -> list[str]:
    return sorted(p.name for p in (self.run_dir / "checkpoints").iterdir())

  def assert_contained(self) -> None:
    """Only out/{run_name} in the working folder; the TMPDIR empty; no temporary file left."""
    assert [p.relative_to(self.cwd).as_posix() for p in self.cwd.rglob("*")
            if not self.run_dir.is_relative_to(p)
            and not p.is_relative_to(self.run_dir)] == []
    assert list(self.tmp.iterdir()) == []
    leftovers = [p for p in self.run_dir.rglob("*") if p.name.endswith(".tmp")
                 or "orbax-checkpoint-tmp" in p.name]
    assert leftovers == []


def wait_for(proc: subprocess.Popen, ready, what: str, timeout_s: float = RUN_TIMEOUT_S,
             poll_s: float = 0.02) -> None:
  """Polls until `ready()`; fails (and kills the run) if it exits or times out first."""
  deadline = time.monotonic() + timeout_s
  while not ready():
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      out, err = proc.communicate(timeout=30)
      pytest.fail(f"run ended (rc={proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-3000:]}")
    time.sleep(poll_s)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
  try:
    out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate(timeout=30)
    pytest.fail(f"run did not exit:\n{out[-2000:]}\n{err[-3000:]}")
  return proc.returncode, out, err


def losses(records: list[dict]) -> list[tuple[int, float, float]]:
  return [(r["step"], r["loss"], r["grad_norm"]) for r in records]


@pytest.fixture(scope="module")
def cache() -> pathlib.Path:
  return shared_cache()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache) -> list[tuple[int, float, float]]:
  """The reference trajectory; the run also shows nothing is written outside its folder."""
  work = Workdir(tmp_path_factory.mktemp("uninterrupted"), cache)
  proc = work.run()
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert work.summary()["status"] == "ok"
  assert work.checkpoints() == ["12", "4", "8"]
  work.assert_contained()
  reference = losses(work.records())
  assert [s for s, _, _ in reference] == list(range(12))
  return reference


def preempt(work: Workdir, after_step: int, resumed_at: int) -> int:
  """Starts (or resumes) the run, sends SIGTERM once `after_step` is logged; the stop step."""
  proc = work.start()
  wait_for(proc, lambda: any(r["step"] == after_step for r in work.records()),
           f"step {after_step} was logged")
  proc.send_signal(signal.SIGTERM)
  rc, out, err = finish(proc)
  assert rc == 0, err[-3000:]
  stopped = resumed_at + work.summary()["steps_run"]
  assert after_step < stopped < 12
  assert out.strip().splitlines()[-1] == (
      f"stopped by SIGTERM after step {stopped}; checkpoint saved, exiting cleanly")
  assert work.summary()["status"] == "preempted"
  assert str(stopped) in work.checkpoints()
  assert [r["step"] for r in work.records()] == list(range(stopped))
  work.assert_contained()
  return stopped


@pytest.mark.slow
def test_sigterm_twice_at_random_steps_then_restart_is_bitwise_identical(tmp_path, cache,
                                                                         uninterrupted):
  rng = random.Random(SEED)
  work = Workdir(tmp_path, cache)
  first_stop = preempt(work, rng.randint(1, 5), resumed_at=0)
  second_stop = preempt(work, rng.randint(first_stop, 8), resumed_at=first_stop)

  proc = work.run()
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert work.summary()["status"] == "ok"
  assert work.summary()["steps_run"] == 12 - second_stop
  assert losses(work.records()) == uninterrupted  # exact float equality, every step
  work.assert_contained()


@pytest.mark.slow
def test_sigkill_during_an_async_save_resumes_from_the_previous_checkpoint(tmp_path, cache,
                                                                           uninterrupted):
  work = Workdir(tmp_path, cache)
  ckpt_dir = work.run_dir / "checkpoints"
  proc = work.start()
  wait_for(proc, lambda: (ckpt_dir / "4").is_dir(), "checkpoint 4 was complete")
  # Step 8's save writes into 8.orbax-checkpoint-tmp and renames it when done: kill in between.
  partial = ckpt_dir / "8.orbax-checkpoint-tmp"
  wait_for(proc, partial.exists, "the save of step 8 started", poll_s=0.001)
  proc.kill()
  rc, _, _ = finish(proc)
  assert rc == -signal.SIGKILL
  assert partial.is_dir() and not (ckpt_dir / "8").exists()

  proc = work.run()
  assert proc.returncode == 0, proc.stderr[-3000:]
  named = partial.relative_to(work.cwd)  # as the user gave run.output_dir
  assert f"WARNING harness.checkpoint: skipping incomplete checkpoint {named}" in (
      proc.stderr.splitlines())
  assert "already exists" not in proc.stderr  # removed at start, not found by the next save
  assert work.summary()["steps_run"] == 8  # resumed after step 4
  attempts = json.loads((work.run_dir / "run.json").read_text())["attempts"]
  assert [a["status"] for a in attempts] == ["died", "ok"]  # the killed attempt is on record
  assert losses(work.records()) == uninterrupted
  assert work.checkpoints() == ["12", "4", "8"]
  work.assert_contained()


@pytest.mark.slow
def test_nan_at_step_k_stops_with_the_documented_error(tmp_path, cache):
  k = 7  # a checkpoint would be due right after this step: it must not be written
  work = Workdir(tmp_path, cache)
  proc = work.run(f"run.poison_step={k}")
  message = (f"non-finite loss=nan at step {k} (train); attention.variant=ulysses num_chunks=2 "
             "kernel=xla; XLA_FLAGS='' LIBTPU_INIT_ARGS=''")
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1] == f"error: {message}"
  summary = work.summary()
  assert (summary["status"], summary["error"]) == ("nan", message)
  assert work.checkpoints() == ["4"]
  assert [r["step"] for r in work.records()] == list(range(k))
  work.assert_contained()
