"""Run integrity across processes and signals: the folder lock and SIGTERM in every phase."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from test_reliability_runs import Workdir, finish, shared_cache, wait_for


@pytest.fixture(scope="module")
def cache():
  return shared_cache()


def _stdout_has(path, text: str):
  return lambda: path.exists() and text in path.read_text()


def _start_logged(work: Workdir, log_name: str, *bindings: str):
  """Starts a run whose stdout goes to a file the test can watch."""
  log = work.cwd.parent / log_name
  out = open(log, "w")
  proc = subprocess.Popen(work.command(*bindings), cwd=work.cwd, env=work.env, stdout=out,
                          stderr=subprocess.PIPE, text=True)
  return proc, log


def _sigterm_while_denoising(work: Workdir, *bindings: str):
  """Starts a run, sends SIGTERM half a second into its denoising; the run must exit 0."""
  proc, log = _start_logged(work, "stdout.txt", *bindings)
  wait_for(proc, _stdout_has(log, "compiled denoise_step"), "the denoising step compiled")
  time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  rc, _, err = finish(proc)
  assert rc == 0, err[-3000:]
  return log


# A model shape no other test compiles: its compile is never in the shared cache, and short.
FRESH_COMPILE = ("model.num_layers=1", "model.ffn_dim=320")

HOLD_LOCK = """
import fcntl, os, pathlib, sys, time
run_dir = pathlib.Path(sys.argv[1])
run_dir.mkdir(parents=True)
handle = open(run_dir / ".lock", "a+")
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
handle.write(f"pid {os.getpid()} on testhost since now\\n")
handle.flush()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_a_second_process_on_a_run_folder_is_refused_and_changes_nothing(tmp_path, cache):
  work = Workdir(tmp_path, cache)
  holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(work.run_dir)], cwd=work.cwd,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    second = work.run("run.steps=4")
  finally:
    holder.kill()
    holder.wait()
  assert second.returncode == 2
  assert second.stderr.strip() == (
      f"error: out/rel is in use by pid {holder.pid} on testhost since now; wait for it to "
      f"finish or choose another run.run_name")
  assert sorted(p.name for p in work.run_dir.iterdir()) == [".lock"]  # nothing written


@pytest.mark.slow
def test_sigterm_during_the_final_eval_is_recorded_as_preempted_then_completed(tmp_path, cache):
  work = Workdir(tmp_path, cache)
  bindings = ("run.steps=4", "run.final_eval=True", "sampler.denoising_steps=150")
  _sigterm_while_denoising(work, *bindings)
  summary = work.summary()
  assert summary["status"] == "preempted"
  assert 0 < summary["eval"]["denoising_steps"] < 150
  # The rerun restores the trained state from the checkpoint saved at the stop and evaluates.
  again = work.run(*bindings)
  assert again.returncode == 0, again.stderr[-3000:]
  summary = work.summary()
  assert summary["status"] == "ok" and summary["eval"]["denoising_steps"] == 150
  assert summary["steps_run"] == 0 and summary["steps_completed"] == 4


@pytest.mark.slow
def test_sigterm_while_compiling_is_recorded_not_lost(tmp_path, cache):
  work = Workdir(tmp_path, cache)
  proc, log = _start_logged(work, "stdout.txt", "run.steps=4", *FRESH_COMPILE)
  wait_for(proc, _stdout_has(log, "compiling train_step"), "compilation started", poll_s=0.005)
  proc.send_signal(signal.SIGTERM)
  rc, _, err = finish(proc)
  assert rc == 0, err[-3000:]
  summary = work.summary()
  assert summary["status"] == "preempted" and summary["steps_run"] == 0
  record = json.loads((work.run_dir / "run.json").read_text())
  assert record["attempts"][-1]["status"] == "preempted"
  assert log.read_text().strip().splitlines()[-1] == (
      "stopped by SIGTERM before the first step; nothing to save, exiting cleanly")
  again = work.run("run.steps=4", *FRESH_COMPILE)
  assert again.returncode == 0, again.stderr[-3000:]
  assert work.summary()["status"] == "ok" and work.summary()["steps_completed"] == 4


@pytest.mark.slow
def test_sigterm_in_eval_mode_saves_no_checkpoint_and_says_so(tmp_path, cache):
  work = Workdir(tmp_path, cache)
  log = _sigterm_while_denoising(work, "run.mode='eval'", "run.steps=2000")
  text = log.read_text()
  assert "checkpoint" not in text.splitlines()[-1]
  assert text.strip().splitlines()[-1].startswith("stopped by SIGTERM after ")
  assert work.summary()["status"] == "preempted"
  assert not (work.run_dir / "checkpoints").exists()
