"""XPK backend: commands xpk 1.16's own parser accepts, safe quoting, and a fake-xpk sweep."""
import fcntl
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

from launch import sweep, xpk
from launch.__main__ import main

XPK_VERSION = "1.16.0"
XPK_VENV = pathlib.Path(os.environ.get(
    "HARNESS_XPK_VENV", pathlib.Path.home() / ".cache" / "harness-xpk-venv"))
EXPERIMENT = "experiments/two_phase_vs_single_shot.gin"
XPK_FLAGS = ["--backend", "xpk", "--dry_run", "--cluster", "bench-v5p", "--project", "my-proj",
             "--zone", "us-east5-a", "--docker_image", "gcr.io/my-proj/harness:0.1",
             "--max_restarts", "1", "--priority", "high", "--storage", "results-fuse",
             "--output_dir", "/gcs/tp"]

# Runs inside xpk's own virtualenv: builds xpk's parser and parses each argv, offline.
PARSE_SCRIPT = r'''
import argparse, contextlib, io, json, sys
from xpk.parser.core import set_parser
parser = argparse.ArgumentParser(prog="xpk")
set_parser(parser=parser)
out = []
for argv in json.load(sys.stdin):
  err = io.StringIO()
  try:
    with contextlib.redirect_stderr(err):
      ns = parser.parse_args(argv)
  except SystemExit:
    out.append({"error": err.getvalue().strip().splitlines()[-1]})
    continue
  out.append({k: v for k, v in vars(ns).items() if not callable(v)})
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def xpk_python():
  """Python of a cached virtualenv with xpk installed, as users install the CLI."""
  ready = XPK_VENV / f".xpk-{XPK_VERSION}-ready"
  XPK_VENV.parent.mkdir(parents=True, exist_ok=True)
  with open(XPK_VENV.parent / f"{XPK_VENV.name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build it once
    if not ready.exists():
      shutil.rmtree(XPK_VENV, ignore_errors=True)
      subprocess.run([sys.executable, "-m", "venv", str(XPK_VENV)], check=True)
      subprocess.run([str(XPK_VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                      f"xpk=={XPK_VERSION}"], check=True, stdout=subprocess.DEVNULL)
      ready.touch()
  return str(XPK_VENV / "bin" / "python")


def _xpk_parse(python: str, argvs: list[list[str]]) -> list[dict]:
  proc = subprocess.run([python, "-c", PARSE_SCRIPT], input=json.dumps(argvs), text=True,
                        capture_output=True, check=True, env=dict(os.environ,
                                                                  TELEMETRY_ENABLED="false"))
  return json.loads(proc.stdout)


def _dry_run(capsys, argv) -> list[list[str]]:
  assert main(argv) == 0, capsys.readouterr().err
  return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.slow
def test_two_phase_dry_run_is_accepted_by_xpk_parser(xpk_python, capsys):
  commands = _dry_run(capsys, ["--experiment", EXPERIMENT, *XPK_FLAGS])
  runs = sweep.expand(sweep.load_experiment(EXPERIMENT))
  assert len(commands) == len(runs) == 54  # 3 chunk counts x 2 resolutions x 3 slices x 3 repeats
  assert {c[0] for c in commands} == {"xpk"}
  parsed = _xpk_parse(xpk_python, [c[1:] for c in commands])
  assert [p.get("error") for p in parsed] == [None] * 54
  by_name = {run.name: run for run in runs}
  assert sorted(by_name) == sorted(p["workload"] for p in parsed)
  for args in parsed:
    run = by_name[args["workload"]]
    assert (args["workload"], args["cluster"], args["tpu_type"], args["num_slices"]) == (
        run.name, "bench-v5p", run.hardware.tpu_type, 1)
    assert args["tpu_type"] in ("v5p-8", "v5p-16", "v5p-32")
    assert (args["docker_image"], args["priority"], args["max_restarts"]) == (
        "gcr.io/my-proj/harness:0.1", "high", "1")
    assert (args["project"], args["zone"], args["storage"]) == (
        "my-proj", "us-east5-a", ["results-fuse"])
    assert shlex.split(args["command"]) == [
        "python", "-m", "harness", *run.harness_args("/gcs/tp")]
    assert args["env"] == [
        "LIBTPU_INIT_ARGS=--xla_tpu_enable_async_all_to_all=true "
        "--xla_tpu_overlap_compute_collective_tc=true"]
  # The parser is strict: the same argv with a bad workload name is refused.
  bad = list(commands[0][1:])
  bad[bad.index("--workload") + 1] = "Bad_Name"
  assert "Name must be less than 40 characters" in _xpk_parse(xpk_python, [bad])[0]["error"]


NASTY = r"""
sweep.name = 'q'
sweep.grid = {'run.tag': ["it's \"quoted\"; echo pwned", "$(touch /tmp/pwned) `id` ${HOME}",
                          "two\nlines \\ back slash"]}
sweep.abbrev = {'run.tag': 't'}
sweep.bindings = ["run.note = 'a; b && c | d > /tmp/x $(e)'"]
sweep.hardware = {'tpu_type': 'v5litepod-8'}
"""


def _nasty_commands(tmp_path, capsys):
  exp = tmp_path / "nasty.gin"
  exp.write_text(NASTY)
  commands = _dry_run(capsys, ["--experiment", str(exp), "--skip_binding_check", *XPK_FLAGS])
  runs = sweep.expand(sweep.load_experiment(str(exp)))
  return commands, runs


def test_command_round_trips_through_shlex_and_a_real_shell(tmp_path, capsys):
  commands, runs = _nasty_commands(tmp_path, capsys)
  assert len(commands) == 3
  fake_bin = tmp_path / "bin"
  fake_bin.mkdir()
  (fake_bin / "python").write_text(
      "#!/bin/sh\nexec " + shlex.quote(sys.executable) +
      " -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\"\n")
  (fake_bin / "python").chmod(0o755)
  for argv, run in zip(commands, runs):
    command = argv[argv.index("--command") + 1]
    intended = ["-m", "harness", *run.harness_args("/gcs/tp")]
    assert shlex.split(command) == ["python", *intended]
    assert "\n" not in command
    shell = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True,
                           cwd=tmp_path, env=dict(os.environ, PATH=f"{fake_bin}:/usr/bin:/bin"))
    assert json.loads(shell.stdout) == intended
  assert not pathlib.Path("/tmp/pwned").exists()
  assert "--gin_bindings=run.tag = 'two\\nlines \\\\ back slash'" in shlex.split(
      commands[2][commands[2].index("--command") + 1])


@pytest.mark.slow
def test_nasty_bindings_are_accepted_by_xpk_parser(xpk_python, tmp_path, capsys):
  commands, runs = _nasty_commands(tmp_path, capsys)
  parsed = _xpk_parse(xpk_python, [c[1:] for c in commands])
  assert [shlex.split(p["command"])[3:] for p in parsed] == [
      r.harness_args("/gcs/tp") for r in runs]
  assert {p["tpu_type"] for p in parsed} == {"v5litepod-8"}


@pytest.mark.parametrize("flags, message", [
    (["--docker_image", "img"], "--backend xpk needs --cluster"),
    (["--cluster", "c"], "--backend xpk needs exactly one of --docker_image"),
    (["--cluster", "c", "--docker_image", "a", "--base_docker_image", "b"],
     "--backend xpk needs exactly one of --docker_image"),
    (["--cluster", "c", "--docker_image", "a", "--env", "NOEQUALS"], "--env=NOEQUALS: expected"),
])
def test_xpk_option_errors_are_one_line(flags, message, capsys):
  assert main(["--experiment", EXPERIMENT, "--backend", "xpk", "--dry_run",
               "--skip_binding_check", *flags]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: " + message) and err.count("\n") == 1


def test_run_without_tpu_type_or_with_a_line_break_is_refused(tmp_path, capsys):
  exp = tmp_path / "e.gin"
  exp.write_text("sweep.grid = {'attention.num_chunks': [1]}")
  assert main(["--experiment", str(exp), "--backend", "xpk", "--dry_run", "--cluster", "c",
               "--docker_image", "i", "--skip_binding_check"]) == 2
  assert capsys.readouterr().err == (
      "error: run e-c1: sweep.hardware has no tpu_type for --backend xpk\n")
  exp.write_text("sweep.grid = {'attention.num_chunks': [1]}\n"
                 "sweep.bindings = ['run.note = 1\\nrun.steps = 2']\n"
                 "sweep.hardware = {'tpu_type': 'v5p-8'}")
  assert main(["--experiment", str(exp), "--backend", "xpk", "--dry_run", "--cluster", "c",
               "--docker_image", "i", "--skip_binding_check"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: run e-c1: binding '--gin_bindings=run.note = 1\\nrun.steps = 2' "
                        "has a line break") and err.count("\n") == 1


def test_libtpu_flags_are_the_harness_hardware_section(tmp_path, monkeypatch):
  (tmp_path / "flags.gin").write_text(
      "FLAGS = ['--xla_tpu_enable_async_all_to_all=true', '--xla_tpu_overlap_compute_collective_tc=true']\n"
      "hardware.libtpu_flags = %FLAGS\naot.libtpu_flags = ['--xla_aot_only=1']\n")
  (tmp_path / "hw.gin").write_text("include 'flags.gin'\naot.topology = 'v5p:2x2x2'\n")
  monkeypatch.chdir(tmp_path)
  assert xpk.libtpu_init_args(["hw.gin"]) == (
      "--xla_tpu_enable_async_all_to_all=true --xla_tpu_overlap_compute_collective_tc=true")
  (tmp_path / "none.gin").write_text("aot.topology = 'v5p:2x2x2'\n")
  assert xpk.libtpu_init_args(["none.gin"]) is None
  assert xpk.libtpu_init_args(["hw.gin"], ["hardware.libtpu_flags = '--a=1 --b=2'"]) == "--a=1 --b=2"
  assert xpk.libtpu_init_args(["none.gin"], ["hardware.libtpu_flags = '--c=1'"]) == "--c=1"
  assert xpk.libtpu_init_args(["none.gin"], ["aot.libtpu_flags = '--c=1'"]) is None
  # What the harness would refuse, the launcher refuses with the harness's one line.
  with pytest.raises(ValueError, match=r"^hardware.libtpu_flags: 'xla_a' is not of the form"):
    xpk.libtpu_init_args(["none.gin"], ["hardware.libtpu_flags = {'xla_a': True}"])
  with pytest.raises(ValueError, match=r"^--gin_file=nope.gin: no such file"):
    xpk.libtpu_init_args(["flags.gin", "nope.gin"])


# Stands in for the xpk executable: `create` runs the workload's command at once (with a fake
# `python -m harness`), `list --wait-for-job-completion` reports the exit status.
FAKE_XPK = r'''
import ast, json, os, pathlib, shlex, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_XPK_LOG"], "a") as log:
  log.write(json.dumps([argv, os.environ.get("TELEMETRY_ENABLED")]) + "\n")
if argv[:2] == ["workload", "create"]:
  command = shlex.split(argv[argv.index("--command") + 1])
  binds = dict(a[len("--gin_bindings="):].split(" = ", 1) for a in command
               if a.startswith("--gin_bindings="))
  name = ast.literal_eval(binds["run.run_name"])
  if name == os.environ.get("FAKE_XPK_FAIL"):
    sys.exit(0)
  out = pathlib.Path(ast.literal_eval(binds["run.output_dir"])) / name
  out.mkdir(parents=True)
  (out / "summary.json").write_text(json.dumps({"status": "ok", "step_time_s": {"median": 1.0}}))
  (out / "config.gin").write_text("run.steps = 3\n")
elif argv[:2] == ["workload", "list"]:
  name = argv[argv.index("--wait-for-job-completion") + 1]
  sys.exit(125 if name == os.environ.get("FAKE_XPK_FAIL") else 0)
'''


def test_sweep_through_a_fake_xpk_submits_waits_and_collects(tmp_path, monkeypatch):
  fake = tmp_path / "xpk"
  fake.write_text("#!" + sys.executable + "\n" + FAKE_XPK)
  fake.chmod(0o755)
  log = tmp_path / "xpk.log"
  monkeypatch.setenv("FAKE_XPK_LOG", str(log))
  monkeypatch.setenv("FAKE_XPK_FAIL", "x-c2")
  exp = tmp_path / "x.gin"
  exp.write_text("sweep.grid = {'attention.num_chunks': [1, 2]}\n"
                 "sweep.hardware = {'tpu_type': 'v5p-8'}")
  runs = sweep.expand(sweep.load_experiment(str(exp)))
  opts = xpk.XpkOptions(cluster="c", docker_image="img", xpk=str(fake), zone="z")
  bucket, res = tmp_path / "bucket", tmp_path / "res"
  counts = xpk.run_sweep(runs, opts, res, str(bucket), progress=False)
  assert (counts.ok, counts.failed) == (1, 1)
  calls = [json.loads(l) for l in log.read_text().splitlines()]
  assert [c[0][:2] for c in calls] == [["workload", "create"]] * 2 + [["workload", "list"]] * 2
  assert {c[1] for c in calls} == {"false"}
  assert calls[2][0] == ["workload", "list", "--cluster", "c", "--wait-for-job-completion",
                         "x-c1", "--zone", "z"]
  lines = [json.loads(l) for l in (res / "results.jsonl").read_text().splitlines()]
  assert [(r["run"], r["status"]) for r in lines] == [("x-c1", "ok"), ("x-c2", "failed")]
  assert lines[1]["error"].startswith("workload ended with xpk status 125")
  assert (res / "x-c1" / "config.gin").read_text() == "run.steps = 3\n"
  monkeypatch.delenv("FAKE_XPK_FAIL")
  counts = xpk.run_sweep(runs, opts, res, str(bucket), progress=False)
  assert (counts.ok, counts.failed, counts.skipped) == (1, 0, 1)
  assert len(log.read_text().splitlines()) == 6  # only x-c2 was submitted again
