"""Input that could run code, write elsewhere or listen on the network is refused or confined."""
from __future__ import annotations

import logging
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from harness import gin_config as config_lib
from harness import mesh as mesh_lib
from launch import gin_static

REPO = pathlib.Path(__file__).resolve().parent.parent
QUICK = str(REPO / "gin" / "quickstart.gin")
IMPORT_RULE = "only the project's own modules (harness.*) may be imported"


@pytest.fixture
def hostile_cwd(tmp_path, monkeypatch) -> pathlib.Path:
  """A working folder whose modules `pwn` and `pkgx` leave a MARKER file when imported."""
  payload = f"import pathlib\npathlib.Path({str(tmp_path / 'MARKER')!r}).write_text('ran')\n"
  (tmp_path / "pwn.py").write_text(payload + "thing = 1\n")
  (tmp_path / "pkgx" / "sub").mkdir(parents=True)
  (tmp_path / "pkgx" / "__init__.py").write_text(payload)
  (tmp_path / "pkgx" / "sub" / "__init__.py").write_text("")
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m` puts the working folder first
  yield tmp_path
  for name in ("pwn", "pkgx", "pkgx.sub"):
    sys.modules.pop(name, None)


def _parse_error(files: list[str], bindings: list[str]) -> str:
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.parse(files, bindings)
  return str(info.value)


def test_gin_import_in_a_binding_is_refused_before_it_runs(hostile_cwd):
  assert _parse_error([QUICK], ["import pwn"]) == (
      f"gin 'import pwn' is refused: {IMPORT_RULE} (bindings string line 1)")
  assert not (hostile_cwd / "MARKER").exists() and "pwn" not in sys.modules


def test_gin_import_in_a_file_and_in_an_include_is_refused(hostile_cwd):
  (hostile_cwd / "inner.gin").write_text("run.steps = 3\nfrom pwn import thing\n")
  (hostile_cwd / "outer.gin").write_text("include 'inner.gin'\n")
  (hostile_cwd / "direct.gin").write_text("import pwn as p\n")
  assert _parse_error([QUICK, "direct.gin"], []) == (
      f"gin 'import pwn as p' is refused: {IMPORT_RULE} "
      f"(file \"{hostile_cwd / 'direct.gin'}\", line 1)")
  assert _parse_error([QUICK, "outer.gin"], []).startswith(
      f"gin 'from pwn import thing' is refused: {IMPORT_RULE}")
  assert not (hostile_cwd / "MARKER").exists()


def test_an_include_is_not_looked_up_by_importing_packages(hostile_cwd):
  # gin's package-resource reader would import `pkgx` to look for pkgx/sub/x.gin.
  (hostile_cwd / "a.gin").write_text("include 'pkgx/sub/x.gin'\n")
  assert _parse_error([QUICK, "a.gin"], []).startswith("Unable to open file: pkgx/sub/x.gin.")
  assert not (hostile_cwd / "MARKER").exists() and "pkgx" not in sys.modules


def test_parsing_quiets_gin_search_misses_only_while_it_parses(caplog):
  """gin logs each search-path miss on the root logger; the filter lives only during a parse."""
  before = list(logging.getLogger().filters)
  assert not any(isinstance(f, config_lib._QuietSearch) for f in before)  # none at import
  config_lib.parse([QUICK], [])
  assert logging.getLogger().filters == before
  with config_lib.project_imports_only():
    logging.error("Path not found: %s", "x.gin")
    logging.error("kept")
  logging.error("Path not found: %s", "after.gin")
  assert [r.getMessage() for r in caplog.records] == ["kept", "Path not found: after.gin"]


def test_project_modules_may_still_be_imported():
  config_lib.parse([QUICK], ["import harness.suggest", "from harness import suggest"])


def test_the_launcher_refuses_an_import_in_an_experiment():
  with pytest.raises(ValueError) as info:
    gin_static.parse_bindings("sweep.repeats = 1\nimport pwn\n", "e.gin")
  assert str(info.value) == f"e.gin, line 2: gin 'import pwn' is refused: {IMPORT_RULE}"
  assert gin_static.parse_bindings("import harness.suggest\nsweep.repeats = 2\n", "e.gin") == {
      "sweep.repeats": 2}


def _env() -> dict[str, str]:
  return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


def test_harness_and_launcher_clis_refuse_imports_from_the_working_folder(hostile_cwd):
  harness = subprocess.run(
      [sys.executable, "-m", "harness", f"--gin_file={QUICK}", "--gin_bindings=import pwn",
       "--dry_run"], cwd=hostile_cwd, env=_env(), capture_output=True, text=True, timeout=120)
  assert harness.returncode == 2 and harness.stderr == (
      f"error: gin 'import pwn' is refused: {IMPORT_RULE} (bindings string line 1)\n")
  exp = hostile_cwd / "e.gin"
  exp.write_text(f"sweep.base_gin_files = [{QUICK!r}]\nsweep.grid = {{'run.steps': [3]}}\n"
                 "sweep.bindings = ['import pwn']\n")
  launch = subprocess.run(
      [sys.executable, "-m", "launch", "--experiment", str(exp), "--dry_run", "--results_dir",
       str(hostile_cwd / "res")], cwd=hostile_cwd, env=_env(), capture_output=True, text=True,
      timeout=120)
  assert launch.returncode == 2, launch.stderr
  assert launch.stderr.splitlines()[-1] == (
      f"error: run e-s3: gin 'import pwn' is refused: {IMPORT_RULE} (bindings string line 1)")
  assert not (hostile_cwd / "MARKER").exists()


def test_an_unquoted_string_in_a_gin_file_names_the_fix(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("run.steps = 3\nattention.variant = ring\n")
  assert _parse_error([QUICK, str(bad)], []) == (
      f"strings need quotes: attention.variant='ring' (file \"{bad}\", line 2)")


def test_macros_defined_anywhere_are_accepted(tmp_path):
  (tmp_path / "inc.gin").write_text("LAYERS = 1\n")
  (tmp_path / "uses.gin").write_text(
      f"include '{tmp_path / 'inc.gin'}'\nrun.steps = %STEPS\nmodel.num_layers = %LAYERS\n")
  config_lib.parse([QUICK, str(tmp_path / "uses.gin")], ["STEPS = 3"])
  cfgs = config_lib.read_configs()
  assert cfgs.run.steps == 3 and cfgs.model.num_layers == 1


def test_an_undefined_macro_in_a_file_suggests_a_defined_one(tmp_path):
  uses = tmp_path / "uses.gin"
  uses.write_text("STEPS = 3\nrun.steps = %STEP\n")
  assert _parse_error([QUICK, str(uses)], []) == (
      "run.steps=%STEP: macro STEP is not defined; define it with a binding 'STEP = value'; "
      f"did you mean 'STEPS'? (file \"{uses}\", line 2)")


def test_jax_keeps_only_the_low_32_bits_of_a_seed():
  # Why run.seed is limited to one signed 32-bit range.
  data = lambda seed: np.asarray(jax.random.key_data(jax.random.key(seed)))
  assert (data(-1) == data(2**32 - 1)).all() and (data(2**32 + 5) == data(5)).all()
  with pytest.raises(OverflowError):
    jax.random.key(2**63)


# Each of these once ended in a traceback or wrote outside run.output_dir; the other rows of the
# bad-input table go through the same CLI entry in-process (tests/test_bad_input_table.py).
@pytest.mark.parametrize("binding, message", [
    ("run.steps=%UNDEFINED", "run.steps=%UNDEFINED: macro UNDEFINED is not defined; define it "
                             "with a binding 'UNDEFINED = value' (bindings string line 1)"),
    ("model.patch=(1, 'a', 2)", "model.patch=(1, 'a', 2): must be 3 positive integers "
                                "(frames, height, width), e.g. (1, 2, 2)"),
    ("run.run_name='..'", "run.run_name='..': must be a plain folder name (not '.' or '..', no "
                          "'/' or '\\', no leading '-', no control characters)"),
], ids=["macro", "patch", "run-name"])
def test_cli_gives_one_line_and_writes_nothing(tmp_path, binding, message):
  out = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, "-m", "harness", f"--gin_file={QUICK}", f"--gin_bindings={binding}",
       f"--gin_bindings=run.output_dir='{out}'"],
      cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and proc.stderr == f"error: {message}\n", proc.stderr
  assert list(tmp_path.iterdir()) == []  # neither out/ nor anything beside it


def test_coordinator_bind_address_follows_the_dialled_address(monkeypatch):
  monkeypatch.delenv("JAX_COORDINATOR_BIND_ADDRESS", raising=False)
  assert mesh_lib.coordinator_bind_address("127.0.0.1:1234") == "127.0.0.1:1234"
  monkeypatch.setenv("JAX_COORDINATOR_BIND_ADDRESS", "[::]:1234")
  assert mesh_lib.coordinator_bind_address("127.0.0.1:1234") == "[::]:1234"


def _listening(port: int) -> list[str]:
  """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on `port`."""
  found = []
  for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in pathlib.Path(table).read_text().splitlines()[1:]:
      local, state = line.split()[1], line.split()[3]
      if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
        found.append(local.rsplit(":", 1)[0])
  return found


LOOPBACK_HEX = ("0100007F", "0000000000000000FFFF00000100007F")  # 127.0.0.1, ::ffff:127.0.0.1


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc/net/tcp")
def test_a_loopback_coordinator_listens_on_loopback_only(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  script = ("import sys\nfrom harness.mesh import init_distributed\n"
            f"init_distributed('127.0.0.1:{port}', 1, 0, init_timeout_s=60)\n"
            "print('up', flush=True)\nsys.stdin.read()\n")
  env = {k: v for k, v in _env().items() if k != "JAX_COORDINATOR_BIND_ADDRESS"}
  proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 90
    assert proc.stdout.readline().strip() == "up"
    while not _listening(port) and time.monotonic() < deadline:
      time.sleep(0.1)
    addresses = _listening(port)
    assert addresses and all(a in LOOPBACK_HEX for a in addresses), addresses
  finally:
    proc.stdin.close()
    proc.wait(timeout=60)
