"""User mistakes get one line naming the binding or flag, exit code 2, and no traceback."""
import subprocess
import sys

import pytest

from harness import __main__ as cli

QUICK = "--gin_file=gin/quickstart.gin"


def _error_line(capsys, argv):
  rc = cli.main(argv)
  err = capsys.readouterr().err.strip()
  assert rc == 2, err
  assert len(err.splitlines()) == 1 and err.startswith("error: "), err
  return err


def test_missing_gin_file(capsys):
  err = _error_line(capsys, ["--gin_file=gin/nope.gin"])
  assert "--gin_file=gin/nope.gin: no such file" in err


def test_unknown_configurable_names_file_and_line(capsys, tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("run.steps = 3\n\nattenshun.num_chunks = 2\n")
  err = _error_line(capsys, [f"--gin_file={bad}"])
  assert "No configurable matching 'attenshun'; did you mean 'attention'?" in err
  assert f'"{bad}", line 3' in err


def test_unknown_parameter(capsys):
  err = _error_line(capsys, [QUICK, "--gin_bindings=attention.chunks=2"])
  assert "'attention' doesn't have a parameter named 'chunks'; did you mean 'num_chunks'?" in err


def test_mesh_product_must_match_devices(capsys):
  err = _error_line(capsys, [QUICK, "--gin_bindings=mesh.context=3"])
  assert "mesh.data/fsdp/context/tensor multiply to 3" in err and "8 devices" in err


def test_unknown_mode(capsys):
  err = _error_line(capsys, [QUICK, "--gin_bindings=run.mode='fly'"])
  assert "run.mode='fly': choose one of train, eval, aot" in err


@pytest.mark.parametrize("steps", [0, -3])
def test_steps_must_be_positive(capsys, steps):
  err = _error_line(capsys, [QUICK, f"--gin_bindings=run.steps={steps}"])
  assert f"run.steps={steps}: must be > 0" in err


def test_simulated_devices_after_jax_started(capsys):
  import jax
  jax.devices()  # the backend is up with the 8 devices of conftest
  err = _error_line(capsys, [QUICK, "--gin_bindings=mesh.simulated_devices=4"])
  assert "mesh.simulated_devices=4 was requested after JAX started with 8 cpu devices" in err


def test_invalid_chunk_count(capsys):
  err = _error_line(capsys, [QUICK, "--gin_bindings=attention.num_chunks=3"])
  assert "attention.num_chunks" in err


def test_malformed_binding(capsys):
  err = _error_line(capsys, [QUICK, "--gin_bindings=run.steps=(3"])
  assert "cannot parse gin bindings" in err


def test_cli_prints_no_traceback():
  proc = subprocess.run([sys.executable, "-m", "harness", QUICK, "--gin_bindings=run.mode='x'"],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: run.mode='x': choose one of train, eval, aot")
