"""The run folder: one process at a time, one config per folder, every attempt kept.

`{output_dir}/{run_name}/run.json` records the run's identity (fingerprint of its config) and
its attempts. Claiming a folder decides what an invocation may do there:
  fresh     nothing there yet (or moved aside by run.resume=False): start at step 0;
  continue  same config, not finished: resume (earlier attempts' files are archived first);
  complete  same config, already done: change nothing.
Anything else (another config, another mode's run, outputs without run.json) is refused with one
line naming the differing bindings, before anything in the folder is written.
"""
from __future__ import annotations

import dataclasses
import datetime
import errno
import fcntl
import json
import os
import pathlib
import shutil
import socket
from typing import Any

from harness import identity as identity_lib
from harness.errors import UserError
from harness.metrics import write_json_atomic

RECORD = "run.json"
LOCK = ".lock"
ARCHIVED = ("summary.json", "metrics.jsonl", "config.gin", "aot.json")


class RunFolderError(UserError):
  """A run folder that this invocation may not use, with a one-line reason."""


@dataclasses.dataclass
class Claim:
  """What this invocation may do in its run folder."""
  run_dir: pathlib.Path
  action: str  # 'fresh' | 'continue' | 'complete'
  record: dict
  source_dir: pathlib.Path | None = None  # eval of a trained run: the train run's folder

  @property
  def attempt(self) -> int:
    return len(self.record["attempts"])

  @property
  def progress(self) -> dict:
    return self.record.setdefault("progress", {})


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def lock(run_dir: pathlib.Path):
  """Holds `run_dir/.lock` for this process (the kernel frees it if the process dies).

  The lock is an flock: a process that dies, even by SIGKILL, releases it, so a lock file left
  behind is never stale.
  """
  try:
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK, "a+")
  except OSError as err:
    raise RunFolderError(f"run.output_dir={str(run_dir.parent)!r}: cannot create {run_dir} "
                         f"({err.strerror})") from None
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.seek(0)
    holder = handle.read().strip() or "another process"
    handle.close()
    raise RunFolderError(f"{run_dir} is in use by {holder}; wait for it to finish or choose "
                         f"another run.run_name") from None
  handle.seek(0)
  handle.truncate()
  handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n")
  handle.flush()
  return handle


def read_record(run_dir: pathlib.Path) -> dict | None:
  """run.json, or None when the folder has none; a one-line error when it is unreadable."""
  path = run_dir / RECORD
  if not path.exists():
    return None
  try:
    record = json.loads(path.read_text())
  except (OSError, ValueError) as err:
    raise RunFolderError(f"{path} is unreadable ({err}); set run.resume=False to move the "
                         f"run aside or choose another run.run_name") from None
  if not isinstance(record, dict) or "fingerprint" not in record:
    raise RunFolderError(f"{path} is not a run record; set run.resume=False to move the run "
                         f"aside or choose another run.run_name")
  return record


def has_outputs(run_dir: pathlib.Path) -> bool:
  return run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir())


def move_aside(run_dir: pathlib.Path) -> pathlib.Path:
  """Renames the run folder to `{run_name}.{UTC time}` beside it; returns the new path."""
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
  aside = run_dir.with_name(f"{run_dir.name}.{stamp}")
  n = 1
  while aside.exists():
    n += 1
    aside = run_dir.with_name(f"{run_dir.name}.{stamp}-{n}")
  run_dir.rename(aside)
  return aside


def archive_attempt(claim: Claim) -> None:
  """Copies the previous attempt's files to attempts/<n>/ before this attempt changes them."""
  previous = claim.attempt - 1
  if previous < 1:
    return
  dest = claim.run_dir / "attempts" / str(previous)
  files = [claim.run_dir / name for name in ARCHIVED if (claim.run_dir / name).exists()]
  if files:
    dest.mkdir(parents=True, exist_ok=True)
    for path in files:
      shutil.copy2(path, dest / path.name)


def _new_record(ident: dict, mode: str, placement: dict) -> dict:
  return {"fingerprint": identity_lib.fingerprint(ident), "mode": mode, "identity": ident,
          "placement": placement, "created": _now(), "attempts": [], "progress": {}}


def _complete(record: dict, target: dict) -> bool:
  """The last attempt ended ok and reached what this invocation asks for."""
  attempts = record.get("attempts") or []
  if not attempts or attempts[-1].get("status") != "ok":
    return False
  progress = record.get("progress", {})
  return all(progress.get(k, 0) >= v for k, v in target.items())


def _refuse_other_config(run_dir: pathlib.Path, record: dict, ident: dict) -> None:
  diff = identity_lib.differences(record.get("identity", {}), ident)
  raise RunFolderError(f"{run_dir} holds a run of another config ({diff}); choose another "
                       f"run.run_name, or set run.resume=False to move that run aside")


def _decide(run_dir: pathlib.Path, record: dict | None, ident: dict, mode: str,
            placement: dict, target: dict, resume: bool) -> Claim:
  fp = identity_lib.fingerprint(ident)
  if record is None:
    if has_outputs(run_dir):
      if not resume:
        aside = move_aside(run_dir)
        return _fresh(run_dir, ident, mode, placement, moved=aside)
      raise RunFolderError(f"{run_dir} holds outputs without a run record ({RECORD}); choose "
                           f"another run.run_name, or set run.resume=False to move them aside")
    return _fresh(run_dir, ident, mode, placement)
  if not resume:
    return _fresh(run_dir, ident, mode, placement, moved=move_aside(run_dir))
  if record["fingerprint"] != fp:
    _refuse_other_config(run_dir, record, ident)
  if record.get("placement") != placement:
    raise RunFolderError(f"{run_dir} was run on {record.get('placement')}, this run would use "
                         f"{placement}; choose another run.run_name, or set run.resume=False to "
                         f"move that run aside")
  if _complete(record, target):
    return Claim(run_dir, "complete", record)
  _refuse_unresumable(run_dir, record, target)
  return Claim(run_dir, "continue", record)


def _refuse_unresumable(run_dir: pathlib.Path, record: dict, target: dict) -> None:
  """A finished train run without checkpoints cannot continue to more steps: say so."""
  attempts = record.get("attempts") or []
  done = record.get("progress", {}).get("steps", 0)
  checkpoints = run_dir / "checkpoints"
  has_checkpoint = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
  if (record.get("mode") == "train" and attempts and attempts[-1].get("status") == "ok"
      and done and not has_checkpoint):
    raise RunFolderError(
        f"run {run_dir} finished {done} steps without a checkpoint (run.checkpoint_every=0), "
        f"so it cannot continue to run.steps={target.get('steps')}; set run.resume=False to "
        f"move it aside and start afresh, or choose another run.run_name")


def _fresh(run_dir, ident, mode, placement, moved: pathlib.Path | None = None) -> Claim:
  run_dir.mkdir(parents=True, exist_ok=True)
  record = _new_record(ident, mode, placement)
  if moved is not None:
    record["moved_aside"] = str(moved)
  return Claim(run_dir, "fresh", record)


def claim(run_dir: pathlib.Path, ident: dict, mode: str, placement: dict, target: dict,
          resume: bool) -> Claim:
  """Decides what this invocation does in `run_dir` (which the caller has locked)."""
  record = read_record(run_dir)
  if record is not None and record.get("mode") != mode and mode in ("eval", "aot"):
    return _claim_beside(run_dir, record, ident, mode, placement, target, resume)
  if record is not None and record.get("mode") != mode:
    raise RunFolderError(f"{run_dir} holds a {record.get('mode')} run, not a {mode} run; "
                         f"choose another run.run_name")
  return _decide(run_dir, record, ident, mode, placement, target, resume)


def _claim_beside(run_dir, record, ident, mode, placement, target, resume) -> Claim:
  """Eval or AOT of another mode's run folder: a run of its own in `{run_dir}/{mode}/`."""
  source = None
  if mode == "eval":
    if record.get("mode") != "train":
      raise RunFolderError(f"{run_dir} holds a {record.get('mode')} run; eval mode evaluates a "
                           f"train run's checkpoint: choose another run.run_name")
    _check_same_model(run_dir, record, ident)
    source = run_dir
  sub = run_dir / mode
  sub.mkdir(exist_ok=True)
  result = _decide(sub, read_record(sub), ident, mode, placement, target, resume)
  result.source_dir = source
  return result


def _check_same_model(run_dir: pathlib.Path, record: dict, ident: dict) -> None:
  """Eval of a train run restores its weights: the model must be the train run's."""
  stored = {"model": record.get("identity", {}).get("model", {})}
  here = {"model": ident.get("model", {})}
  if stored != here:
    raise RunFolderError(f"{run_dir} holds a train run of another model "
                         f"({identity_lib.differences(stored, here)}); eval mode restores that "
                         f"run's checkpoint only into the same model")


def start_attempt(claim_: Claim, argv: list[str]) -> None:
  """Records a new attempt as running (process 0 only)."""
  attempts = claim_.record["attempts"]
  if attempts and attempts[-1].get("status") == "running":
    # We hold the lock, so that attempt's process is gone without a word (SIGKILL, power loss).
    attempts[-1].update(status="died", error="the process ended without recording its end")
  claim_.record["attempts"].append(
      {"attempt": len(claim_.record["attempts"]) + 1, "action": claim_.action,
       "status": "running", "started": _now(), "pid": os.getpid(),
       "host": socket.gethostname(), "argv": argv})
  save_record(claim_)
  archive_attempt(claim_)


def end_attempt(claim_: Claim, status: str, error: str | None = None, **extra: Any) -> None:
  attempt = claim_.record["attempts"][-1]
  attempt.update(status=status, ended=_now(), error=error, **extra)
  save_record(claim_)


def save_record(claim_: Claim) -> None:
  try:
    write_json_atomic(claim_.run_dir / RECORD, claim_.record)
  except OSError as err:
    raise RunFolderError(f"cannot write {claim_.run_dir / RECORD} "
                         f"({err.strerror or errno.errorcode.get(err.errno, err)})") from None
