"""Every command in README.md, docs/*.md and the --help texts runs (long ones in their dry form)."""
import contextlib
import importlib.metadata
import io
import json
import os
import pathlib
import re
import runpy
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import warnings

import pytest
from packaging.requirements import Requirement

import doc_commands as dc
import test_reliability_multihost

REPO = dc.REPO
COMMANDS = dc.documented_commands()
MAIN_JOB = "python -m harness --gin_file=gin/quickstart.gin"
# Runs that take minutes get their dry form; a sweep's --dry_run prints its runs' commands.
LONG = re.compile(r"^python -m launch --experiment ")


def _env() -> dict[str, str]:
  """A user's shell: the venv's python first, no test-only device count forced on JAX."""
  env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", TELEMETRY_ENABLED="false",
             IMAGE="us-docker.pkg.dev/PROJECT/REPO/harness:test")
  env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
  env["XLA_FLAGS"] = flags.strip()
  return env


def _bash(cmd: str, cwd: pathlib.Path, timeout: int = 180) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                        timeout=timeout)


def _ok(proc: subprocess.CompletedProcess, cmd: str) -> None:
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, f"{cmd}\nexit {proc.returncode}\n{out[-3000:]}"
  assert "Traceback" not in out, f"{cmd}\n{out[-3000:]}"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
  """A folder like a fresh clone's root after the main job: outputs and results land here."""
  root = tmp_path_factory.mktemp("docs")
  for name in ("gin", "experiments", "tests"):
    (root / name).symlink_to(REPO / name)
  shutil.copy(REPO / "README.md", root / "README.md")
  main_job = _bash(MAIN_JOB, root, timeout=400)
  summary = json.loads((root / "out/quickstart/summary.json").read_text())
  record = {"run": "quick-cpu-c2-r0", "status": "ok", "mode": "train", "hardware": "local",
            "point": {"attention.num_chunks": 2}, "summary": summary}
  (root / "results/quick-cpu").mkdir(parents=True)
  (root / "results/quick-cpu/results.jsonl").write_text(json.dumps(record) + "\n")
  (root / "results/bench").mkdir()
  shutil.copy(REPO / "experiments/results/bench.json", root / "results/bench/bench.json")
  return root, main_job


def _capture(root: pathlib.Path) -> pathlib.Path:
  return sorted((root / "out/quickstart/tensorboard/plugins/profile").iterdir())[0]


def runnable(cmd: str, root: pathlib.Path) -> tuple[str, pathlib.Path]:
  """(what bash runs, in which folder) for a documented command; fails on an unknown one."""
  if cmd.startswith(("pytest ", "python -m pytest")):
    return cmd + " --collect-only -q -p no:cacheprovider -n 0", REPO  # the suite: collect it
  if cmd.startswith("python -m harness.trace "):
    capture = _capture(root)
    cmd = cmd.replace("step.hlo.txt", str(capture / "train_step.hlo.txt"))
    return cmd.replace(" capture/", f" {capture}"), root
  if cmd.startswith("python -m launch.bench "):
    return cmd + f" --readme {root / 'README.md'}", root  # leaves the repository's README alone
  if cmd.startswith("python -m launch.report "):
    return cmd, root
  if LONG.match(cmd):
    return (cmd if "--dry_run" in cmd else cmd + " --dry_run").replace("[--dry_run]",
                                                                      "--dry_run"), root
  if cmd.startswith("python -m harness ") or cmd.startswith("python -m harness\n"):
    if cmd == MAIN_JOB or "run.mode='aot'" in cmd or cmd.endswith((" --help", " --dry_run")):
      return cmd, root
    return cmd + " --dry_run", root
  raise AssertionError(f"no plan to run the documented command {cmd!r}: add one to runnable()")


def _run_documented(cmd: str, root: pathlib.Path) -> subprocess.CompletedProcess:
  shell, cwd = runnable(cmd, root)
  proc = _bash(shell, cwd, timeout=400)
  _ok(proc, shell)
  return proc


def _requirements_installed(extra: str | None) -> None:
  """Every dependency `pip install -e .` (or '.[test]') asks for is installed in this venv."""
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  wanted = list(project["dependencies"]) + list(project["optional-dependencies"].get(extra, []))
  for text in wanted:
    req = Requirement(text)
    version = importlib.metadata.version(req.name)
    assert req.specifier.contains(version, prereleases=True), (text, version)


def _tensorboard(cmd: str, root: pathlib.Path) -> None:
  """Starts the server as printed (on a free port), waits for its plugin list, stops it."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  argv = cmd.split() + ["--port", str(port)]
  proc = subprocess.Popen(argv, cwd=root, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  try:
    deadline, listing = time.monotonic() + 120, None
    while listing is None and time.monotonic() < deadline and proc.poll() is None:
      try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugins_listing") as r:
          listing = json.loads(r.read())
      except OSError:
        time.sleep(0.5)
    assert listing is not None, f"{cmd}: no answer; {proc.poll()=}"
    assert "profile" in listing and "scalars" in listing, sorted(listing)
  finally:
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"{c.source}:{c.text[:60]}" for c in COMMANDS])
def test_documented_command_runs(cmd, work):
  root, main_job = work
  reason = dc.not_here_reason(cmd.text)
  if reason:
    # Only these kinds may be left out, so that a new kind of command cannot hide among them.
    assert cmd.text.startswith(("IMAGE=", "gcloud ", "docker ", "python3.11 -m venv ~/",
                                "~/.cache/")), cmd.text
    pytest.skip(f"not run here: {reason}")
  extra, rest = dc.split_setup(cmd.text)
  if extra is not None:
    _requirements_installed("test" if "test" in extra else None)
  if rest == MAIN_JOB:
    _ok(main_job, MAIN_JOB)
  elif rest.startswith("tensorboard "):
    _tensorboard(rest, root)
  elif rest.startswith("for "):
    # The two-process loop runs, as printed plus a few bindings, in tests/test_reliability_multihost.py.
    assert rest == test_reliability_multihost.documented_loop()
  else:
    proc = _run_documented(rest, root)
    if "run.mode='aot'" in rest:  # libtpu's harmless CPU-host messages stay off the console
      assert "E0000" not in proc.stdout + proc.stderr, proc.stderr


def _help_text(module: str) -> str:
  """`python -m MODULE --help` (or a script's), run in this process: the CLIs are argparse."""
  out = io.StringIO()
  argv = sys.argv
  sys.argv = [module, "--help"]
  try:
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done, \
        warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported before
      if module.endswith(".py"):
        runpy.run_path(str(REPO / module), run_name="__main__")
      else:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
  finally:
    sys.argv = argv
  assert done.value.code in (0, None), module
  return out.getvalue()


MENTIONS = list({m.text: m for path in dc.DOC_FILES
                 for m in dc.inline_mentions(path.read_text(), path.name)}.values())


@pytest.mark.parametrize("mention", MENTIONS, ids=[m.text[:60] for m in MENTIONS])
def test_commands_named_in_prose_exist_with_their_flags(mention, monkeypatch):
  monkeypatch.setenv("COLUMNS", "200")
  words = mention.text.split()
  module = words[2] if words[1] == "-m" else words[1]
  help_text = _help_text(module)
  for flag in (w.split("=")[0] for w in words if w.startswith("--")):
    assert re.search(rf"(^|\s|\[){re.escape(flag)}\b", help_text), (mention.text, flag)


def test_help_examples_run(work, monkeypatch):
  monkeypatch.setenv("COLUMNS", "200")
  root, _ = work
  examples = []
  for module in dc.modules_of(COMMANDS):
    examples += dc.help_commands(_help_text(module), f"python -m {module} --help")
  assert len(examples) >= 3, examples  # harness, launch and launch.report show one each
  # An example that is also in the docs runs in test_documented_command_runs.
  shown = {runnable(c.text, root)[0] for c in COMMANDS
           if not dc.not_here_reason(c.text) and c.text.startswith("python -m ")}
  for example in examples:
    if runnable(example.text, root)[0] not in shown:
      _run_documented(example.text, root)


def test_every_documented_command_is_found():
  texts = [c.text for c in COMMANDS]
  assert MAIN_JOB in [dc.split_setup(t)[1] for t in texts]
  assert any("run.mode='aot'" in t for t in texts) and any(t.startswith("for ") for t in texts)
  assert any(t.startswith("tensorboard ") for t in texts)
  assert len(texts) >= 20, texts
