"""Runs a sweep here, one `python -m harness` subprocess at a time, resumably."""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import functools
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Iterator, Sequence

import tqdm

from launch import results
from launch.sweep import Run

HARNESS_CMD_ENV = "LAUNCH_HARNESS_CMD"
ERROR_TAIL_LINES = 25
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclasses.dataclass
class Counts:
  """What a sweep did."""
  ok: int = 0
  failed: int = 0
  skipped: int = 0


def harness_command(override: str | None = None) -> list[str]:
  """`python -m harness`, or the --harness_cmd / $LAUNCH_HARNESS_CMD replacement (for tests)."""
  text = override or os.environ.get(HARNESS_CMD_ENV)
  return shlex.split(text) if text else [sys.executable, "-m", "harness"]


@contextlib.contextmanager
def exclusive(results_dir: pathlib.Path) -> Iterator[None]:
  """Refuses a second launcher on the same results directory (they would race on outputs)."""
  results_dir.mkdir(parents=True, exist_ok=True)
  with open(results_dir / ".lock", "w") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise ValueError(f"{results_dir}: another launcher is using this results directory") from None
    yield


def _tail(path: pathlib.Path, lines: int = ERROR_TAIL_LINES) -> str:
  try:
    text = path.read_text(errors="replace")
  except OSError:
    return ""
  return "\n".join(text.rstrip().splitlines()[-lines:])


def _terminate(proc: subprocess.Popen) -> None:
  """Stops a child we started: SIGTERM, then SIGKILL if it lingers."""
  if proc.poll() is None:
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


def _die_with_parent(parent: int) -> None:
  """In the child: ask Linux for SIGTERM when the launcher dies, even by SIGKILL."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
  except (OSError, AttributeError):
    return  # not Linux: a killed launcher may leave its run going
  if os.getppid() != parent:  # the launcher died before prctl took effect
    os._exit(1)  # pylint: disable=protected-access


def _sigterm_as_exit(signum, frame):  # pylint: disable=unused-argument
  raise SystemExit(128 + signum)


def spec_path(results_dir: pathlib.Path, run: Run) -> pathlib.Path:
  return results_dir / "logs" / f"{run.name}.spec.json"


def write_spec(results_dir: pathlib.Path, run: Run) -> None:
  """Which version of the run (its fingerprint) the outputs in its folder belong to."""
  path = spec_path(results_dir, run)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps({"run": run.name, "fingerprint": run.fingerprint()}) + "\n")
  os.replace(tmp, path)


def spec_fingerprint(results_dir: pathlib.Path, run: Run) -> str | None:
  """The fingerprint of the run version last started in its folder, or None."""
  try:
    return json.loads(spec_path(results_dir, run).read_text()).get("fingerprint")
  except (OSError, ValueError, AttributeError):
    return None


def execute(run: Run, cmd: Sequence[str], results_dir: pathlib.Path,
            timeout_s: float | None, fresh: bool = False) -> dict:
  """Runs one harness process to the end and returns its results.jsonl record.

  The harness keeps its run folder's identity: a run already complete is left as it is (its
  summary is read back), and `fresh` moves an older version's outputs aside first.
  """
  log = results_dir / "logs" / f"{run.name}.log"
  log.parent.mkdir(parents=True, exist_ok=True)
  argv = [*cmd, *run.harness_args(str(results_dir))]
  if fresh:  # outputs of an older version of this run: the harness moves them aside, keeps them
    argv.append("--gin_bindings=run.resume=False")
  write_spec(results_dir, run)
  start = time.monotonic()
  with open(log, "w") as out:
    out.write(shlex.join(argv) + "\n")
    out.flush()
    # An orphaned run would race with the rerun that restarts it, in the same folder.
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=(functools.partial(_die_with_parent, os.getpid())
                                        if sys.platform == "linux" else None))
    try:
      returncode = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
      _terminate(proc)
      returncode = None
    finally:
      _terminate(proc)  # also on Ctrl-C / SIGTERM of the launcher
  wall_s = round(time.monotonic() - start, 3)
  complete, summary, aot = results.read_outputs(results_dir / run.name, run.mode)
  if complete and returncode == 0:
    return results.make_record(run, "ok", summary=summary, aot=aot, returncode=0, wall_s=wall_s,
                               output_dir=str(results_dir))
  if returncode is None:
    error = f"timed out after {timeout_s} s\n" + _tail(log)
  elif returncode == 0:
    error = "harness exited 0 but summary.json is missing, incomplete or timed no step"
  else:
    error = _tail(log) or f"harness exited with status {returncode}"
  return results.make_record(run, "failed", summary=summary, aot=aot, error=error,
                             returncode=returncode, wall_s=wall_s, output_dir=str(results_dir))


def plan(run: Run, record: dict | None, results_dir: pathlib.Path,
         retry_failed: bool) -> tuple[str, dict | None]:
  """('skip' | 'adopt' | 'run' | 'fresh', record to write when adopting) for one run.

  Outputs are adopted only when the launcher started this very version of the run there (its
  spec file names the same fingerprint) and they are complete; outputs of an edited
  experiment's older version are never adopted: the run starts afresh and they are kept aside.
  """
  same = record is not None and record.get("fingerprint") == run.fingerprint()
  if same and record["status"] == "ok":
    return "skip", None
  if same and record["status"] == "failed" and not retry_failed:
    return "skip", None
  started = spec_fingerprint(results_dir, run)
  if started is not None and started != run.fingerprint():
    return "fresh", None
  if record is None and started == run.fingerprint():
    # Killed after the harness finished but before the line was written: keep its work.
    complete, summary, aot = results.read_outputs(results_dir / run.name, run.mode)
    if complete:
      return "adopt", results.make_record(run, "ok", summary=summary, aot=aot,
                                          output_dir=str(results_dir))
  return "run", None


def run_sweep(runs: Sequence[Run], results_dir: str | os.PathLike, *,
              harness_cmd: Sequence[str] | None = None, retry_failed: bool = True,
              timeout_s: float | None = None, progress: bool = True) -> Counts:
  """Runs every run not already done; a failed run is recorded and the sweep goes on."""
  results_dir = pathlib.Path(results_dir)
  cmd = list(harness_cmd or harness_command())
  counts = Counts()
  # SIGTERM (e.g. a job scheduler) unwinds like Ctrl-C, so the run in flight is stopped too.
  main_thread = threading.current_thread() is threading.main_thread()
  previous = signal.getsignal(signal.SIGTERM)
  if main_thread:
    signal.signal(signal.SIGTERM, _sigterm_as_exit)
  try:
    with exclusive(results_dir):
      store = results.ResultsFile(results_dir / results.RESULTS_FILE)
      records = store.load()
      bar = tqdm.tqdm(runs, unit="run", file=sys.stderr, disable=not progress, dynamic_ncols=True)
      for run in bar:
        bar.set_postfix_str(run.name)
        action, record = plan(run, records.get(run.name), results_dir, retry_failed)
        if action == "skip":
          counts.skipped += 1
          continue
        if action in ("run", "fresh"):
          record = execute(run, cmd, results_dir, timeout_s, fresh=action == "fresh")
        store.put(record)
        if record["status"] == "ok":
          counts.ok += 1
        else:
          counts.failed += 1
          last = (record["error"] or "").strip().splitlines()[-1:] or [""]
          tqdm.tqdm.write(f"FAILED {run.name}: {last[0]}", file=sys.stderr)
  finally:
    if main_thread:
      signal.signal(signal.SIGTERM, previous)
  return counts
