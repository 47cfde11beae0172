"""Local backend with a fake harness: resume, crash recording, atomic results, kill + rerun."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from launch import local, results, sweep
from launch.__main__ import main

REPO = pathlib.Path(__file__).resolve().parent.parent

# Stands in for `python -m harness`: reads the bindings the launcher passes and writes a summary.
FAKE_HARNESS = r'''
import ast, json, os, pathlib, sys, time
binds = {}
for arg in sys.argv[1:]:
  if arg.startswith("--gin_bindings="):
    key, _, value = arg[len("--gin_bindings="):].partition("=")
    binds[key.strip()] = ast.literal_eval(value.strip())
name = binds["run.run_name"]
with open(os.environ["FAKE_LOG"], "a") as log:
  log.write(name + "\n")
if int(os.environ.get("FAKE_HANG_AFTER", "1000")) < len(open(os.environ["FAKE_LOG"]).readlines()):
  pathlib.Path(os.environ["FAKE_PID"]).write_text(str(os.getpid()))
  time.sleep(60)  # a run in flight, until someone kills it
  sys.exit(3)
if os.environ.get("FAKE_CRASH") == name:
  print("Traceback (most recent call last):", file=sys.stderr)
  print("ValueError: attention.num_chunks=3: fake failure", file=sys.stderr)
  sys.exit(1)
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
chunks = binds.get("attention.num_chunks", 1)
step = 0.1 / chunks ** 0.5
out = pathlib.Path(binds["run.output_dir"]) / name
out.mkdir(parents=True, exist_ok=True)
summary = {"status": "ok", "attention": {"variant": "ulysses", "num_chunks": chunks},
           "mesh": {"context": 4}, "sequence_length": 32, "step_times_s": [step, step, step],
           "step_time_s": {"median": step, "p10": step, "p90": step, "n": 3}}
if binds["run.mode"] == "aot":
  (out / "aot.json").write_text(json.dumps({"predicted_step_s": step / 2, "hidden_fraction": 0.5}))
(out / "summary.json.tmp").write_text(json.dumps(summary))
os.replace(out / "summary.json.tmp", out / "summary.json")
'''

EXPERIMENT = """
sweep.name = 'fake'
sweep.grid = {'attention.num_chunks': [1, 2, 4]}
sweep.repeats = %s
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
  script = tmp_path / "fake_harness.py"
  script.write_text(FAKE_HARNESS)
  monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
  monkeypatch.setenv(local.HARNESS_CMD_ENV, f"{sys.executable} {script}")
  (tmp_path / "calls.log").touch()
  return tmp_path


def _runs(tmp_path, repeats=1, modes=None):
  path = tmp_path / "fake.gin"
  path.write_text(EXPERIMENT % repeats)
  return sweep.expand(sweep.load_experiment(str(path)), modes=modes)


def _calls(tmp_path):
  return (tmp_path / "calls.log").read_text().split()


def _lines(results_dir):
  return [json.loads(l) for l in (results_dir / "results.jsonl").read_text().splitlines()]


def test_crash_is_recorded_sweep_goes_on_and_rerun_retries_only_it(fake, monkeypatch):
  out = fake / "res"
  monkeypatch.setenv("FAKE_CRASH", "fake-c2")
  counts = local.run_sweep(_runs(fake), out, progress=False)
  assert (counts.ok, counts.failed, counts.skipped) == (2, 1, 0)
  lines = {r["run"]: r for r in _lines(out)}
  assert [r["status"] for r in lines.values()] == ["ok", "failed", "ok"]
  assert lines["fake-c2"]["error"].endswith("ValueError: attention.num_chunks=3: fake failure")
  assert lines["fake-c2"]["returncode"] == 1
  assert lines["fake-c4"]["summary"]["step_time_s"]["median"] == pytest.approx(0.05)
  assert lines["fake-c4"]["point"] == {"attention.num_chunks": 4}

  monkeypatch.delenv("FAKE_CRASH")
  counts = local.run_sweep(_runs(fake), out, progress=False)
  assert (counts.ok, counts.failed, counts.skipped) == (1, 0, 2)
  assert [r["run"] for r in _lines(out)] == ["fake-c1", "fake-c4", "fake-c2"]
  assert all(r["status"] == "ok" for r in _lines(out))

  counts = local.run_sweep(_runs(fake), out, progress=False)  # nothing left to do
  assert (counts.ok, counts.failed, counts.skipped) == (0, 0, 3)
  assert _calls(fake) == ["fake-c1", "fake-c2", "fake-c4", "fake-c2"]


def test_complete_outputs_without_a_record_are_adopted_not_rerun(fake):
  out = fake / "res"
  runs = {r.name: r for r in _runs(fake)}
  (out / "fake-c2").mkdir(parents=True)
  (out / "fake-c2" / "summary.json").write_text(json.dumps(
      {"status": "ok", "step_time_s": {"median": 1.0}}))
  (out / "fake-c4").mkdir(parents=True)
  (out / "fake-c4" / "summary.json").write_text('{"status": "ok", "step_ti')  # torn write
  (out / "logs").mkdir()
  for name in ("fake-c2", "fake-c4"):  # what a launcher killed after these runs leaves
    local.write_spec(out, runs[name])
  counts = local.run_sweep(_runs(fake), out, progress=False)
  assert (counts.ok, counts.failed, counts.skipped) == (3, 0, 0)
  assert _calls(fake) == ["fake-c1", "fake-c4"]


def test_outputs_of_another_config_are_never_adopted(fake):
  out = fake / "res"
  (out / "fake-c2").mkdir(parents=True)
  (out / "fake-c2" / "summary.json").write_text(json.dumps(
      {"status": "ok", "step_time_s": {"median": 1.0, "n": 3}}))
  counts = local.run_sweep(_runs(fake), out, progress=False)  # no spec file: not adopted
  assert counts.ok == 3 and _calls(fake) == ["fake-c1", "fake-c2", "fake-c4"]


def test_an_edited_experiment_starts_its_runs_afresh_keeping_the_old_outputs(fake):
  out = fake / "res"
  local.run_sweep(_runs(fake), out, progress=False)
  path = fake / "fake.gin"
  path.write_text(EXPERIMENT % 1 + "sweep.bindings = ['run.seed=3']\n")
  edited = sweep.expand(sweep.load_experiment(str(path)))
  assert all(r.fingerprint() != o.fingerprint() for r, o in zip(edited, _runs(fake)))
  counts = local.run_sweep(edited, out, progress=False)
  assert counts.ok == 3
  log = (out / "logs" / "fake-c2.log").read_text().splitlines()[0]
  assert "--gin_bindings=run.resume=False" in log  # the harness moves the old run aside


def test_an_ok_run_that_timed_no_step_is_not_a_result(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "summary.json").write_text(json.dumps(
      {"status": "ok", "step_time_s": {"median": None, "n": 0}}))
  assert not results.read_outputs(tmp_path / "a", "train")[0]


def test_complete_means_status_ok_or_the_mode_specific_number(tmp_path):
  def write(name, summary=None, aot=None):
    (tmp_path / name).mkdir()
    if summary is not None:
      (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    if aot is not None:
      (tmp_path / name / "aot.json").write_text(json.dumps(aot))
    return tmp_path / name
  assert results.read_outputs(write("a", {"status": "ok"}), "train")[0]
  assert not results.read_outputs(write("b", {"status": "failed", "step_time_s": {
      "median": 1.0}}), "train")[0]
  assert results.read_outputs(write("c", {"step_time_s": {"median": 0.5}}), "eval")[0]
  assert not results.read_outputs(write("d", {"step_time_s": {"median": None}}), "train")[0]
  assert results.read_outputs(write("e", aot={"predicted_step_s": 0.1}), "aot")[0]
  assert results.read_outputs(write("f", aot={"fits_hbm": False}), "aot")[0]
  assert not results.read_outputs(write("g", aot={"fits_hbm": True}), "aot")[0]
  assert not results.read_outputs(write("h"), "train")[0]


def test_results_file_drops_a_torn_line_and_never_duplicates(tmp_path):
  path = tmp_path / "results.jsonl"
  path.write_text('{"run": "a", "status": "ok"}\n{"run": "b", "sta')
  store = results.ResultsFile(path)
  assert path.read_text() == '{"run": "a", "status": "ok"}\n'
  store.put({"run": "b", "status": "failed"})
  store.put({"run": "b", "status": "ok"})
  store.put({"run": "c", "status": "ok"})
  assert [json.loads(l) for l in path.read_text().splitlines()] == [
      {"run": "a", "status": "ok"}, {"run": "b", "status": "ok"}, {"run": "c", "status": "ok"}]


def test_second_launcher_on_same_results_dir_is_refused(tmp_path):
  with local.exclusive(tmp_path):
    with pytest.raises(ValueError, match=r"another launcher is using this results directory$"):
      with local.exclusive(tmp_path):
        pass


def test_cli_writes_results_report_png_and_tensorboard(fake, capsys):
  exp = fake / "fake.gin"
  exp.write_text(EXPERIMENT % 2)
  out = fake / "res"
  argv = ["--experiment", str(exp), "--results_dir", str(out), "--no_progress",
          "--skip_binding_check"]
  assert main(argv) == 0
  assert len(_lines(out)) == 6
  report = (out / "report.md").read_text()
  assert "| ulysses | 4 | 4 | 32 | 50 (50–50) | 2.000× [2.000–2.000, bootstrap] |" in report
  assert "| 2/2 | 3 × 2 | faster |" in report
  # The sweep ends with one line per configuration, then the report's path.
  assert capsys.readouterr().err.splitlines()[-3:] == [
      "train · local · chunks=2: 1.414× vs single-shot [1.414–1.414, bootstrap] -> faster "
      "(3 timed steps × 2 repeats)",
      "train · local · chunks=4: 2.000× vs single-shot [2.000–2.000, bootstrap] -> faster "
      "(3 timed steps × 2 repeats)",
      f"report: {out / 'report.md'}"]
  rows = json.loads((out / "report.json").read_text())["groups"][0]["rows"]
  assert [(r["chunks"], r["timed_steps"], r["repeats"], r["verdict"]) for r in rows] == [
      (1, [3, 3], 2, None), (2, [3, 3], 2, "faster"), (4, [3, 3], 2, "faster")]
  assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert list((out / "tensorboard").glob("events.out.tfevents.*"))
  assert main(argv) == 0  # a rerun does no work
  assert len(_calls(fake)) == 6
  assert "fake: 0 ok, 0 failed, 6 already done" in capsys.readouterr().err


def test_cli_dry_run_and_errors(fake, capsys):
  exp = fake / "fake.gin"
  exp.write_text(EXPERIMENT % 1)
  assert main(["--experiment", str(exp), "--dry_run", "--results_dir", "r",
               "--skip_binding_check", "--only", "c4"]) == 0
  printed = capsys.readouterr().out.strip().splitlines()
  assert len(printed) == 1 and printed[0].endswith(
      "'--gin_bindings=attention.num_chunks = 4' '--gin_bindings=run.mode = '\"'\"'train'\"'\"'' "
      "'--gin_bindings=run.output_dir = '\"'\"'r'\"'\"'' "
      "'--gin_bindings=run.run_name = '\"'\"'fake-c4'\"'\"''")
  assert main(["--experiment", "nope.gin"]) == 2
  assert capsys.readouterr().err == "error: --experiment=nope.gin: no such file\n"
  assert _calls(fake) == []


def _dead(pid: int) -> bool:
  try:
    state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
  except FileNotFoundError:
    return True
  return state in ("Z", "X")  # a zombie no one has reaped yet has stopped running


@pytest.mark.parametrize("how", ["sigkill-group", "sigterm-launcher", "sigkill-launcher"])
def test_kill_mid_sweep_then_rerun_finishes_with_nothing_lost_or_duplicated(fake, how):
  exp = fake / "fake.gin"
  exp.write_text(EXPERIMENT % 2)
  out, pid_file = fake / "res", fake / "inflight.pid"
  cmd = [sys.executable, "-m", "launch", "--experiment", str(exp), "--results_dir", str(out),
         "--no_progress", "--no_report", "--skip_binding_check"]
  env = dict(os.environ, FAKE_HANG_AFTER="2", FAKE_PID=str(pid_file))
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 60
  while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
    time.sleep(0.05)  # exists before its pid is written
  child = int(pid_file.read_text())  # the third run hangs until killed
  if how == "sigkill-group":
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the run in flight
    assert proc.wait() == -signal.SIGKILL
  elif how == "sigterm-launcher":
    proc.terminate()  # the launcher alone must stop its run
    assert proc.wait() == 128 + signal.SIGTERM
  else:
    proc.kill()  # the run must not outlive even a SIGKILLed launcher
    assert proc.wait() == -signal.SIGKILL
  deadline = time.monotonic() + 10
  while not _dead(child) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert _dead(child)
  before = [r["run"] for r in _lines(out)]
  assert before == ["fake-c1-r0", "fake-c2-r0"]  # repeats run interleaved: round 0 first
  del env["FAKE_HANG_AFTER"]
  subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
  after = _lines(out)
  assert [r["run"] for r in after] == [
      r.name for r in sorted(_runs(fake, repeats=2), key=lambda r: r.repeat)]
  assert all(r["status"] == "ok" for r in after)
  assert _calls(fake) == ["fake-c1-r0", "fake-c2-r0", "fake-c4-r0", "fake-c4-r0", "fake-c1-r1",
                          "fake-c2-r1", "fake-c4-r1"]
