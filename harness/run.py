"""The run entry: gin → configs → devices → mesh → run folder → the chosen mode → outputs."""
from __future__ import annotations

import dataclasses
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from harness import api, execute, run_folder, summary
from harness import identity as identity_lib
from harness import mesh as mesh_lib
from harness.aot import entry as aot_entry
from harness.configs import Configs
from harness.phases import StopRequested

ACTIONS = ("fresh", "continue", "complete")


def identity(cfgs: Configs) -> dict:
  """The run's identity: every section but the knobs that may change between segments."""
  sections = {f.name: getattr(cfgs, f.name) for f in dataclasses.fields(cfgs)}
  return identity_lib.identity(sections, cfgs.run.mode)


def _target(cfgs: Configs) -> dict:
  """What 'complete' means for this invocation (see run_folder)."""
  if cfgs.run.mode == "aot":
    return {}
  target = {"steps": cfgs.run.steps}
  if cfgs.run.mode == "train" and cfgs.run.final_eval:
    target["final_eval"] = 1
  return target


def _placement(cfgs: Configs, mesh) -> dict:
  if cfgs.run.mode == "aot":
    return {"topology": cfgs.aot.topology}
  return {"platform": mesh_lib.platform(mesh), "devices": int(mesh.size),
          "mesh": {k: int(v) for k, v in mesh.shape.items()}}


def claim_folder(cfgs: Configs, mesh, ident: dict, argv: list[str]):
  """(claim, lock) on process 0; the same decision on every other process (lock None)."""
  # AOT compiles on this host alone; asking JAX for processes would start a backend too early.
  processes = 1 if cfgs.run.mode == "aot" else jax.process_count()
  is_main = processes == 1 or jax.process_index() == 0
  code, claim, handle = -1, None, None
  if is_main:
    try:
      handle = run_folder.lock(cfgs.run_dir)
      claim = run_folder.claim(cfgs.run_dir, ident, cfgs.run.mode, _placement(cfgs, mesh),
                               _target(cfgs), cfgs.run.resume)
      if "moved_aside" in claim.record and claim.run_dir == cfgs.run_dir:
        handle.close()  # the lock moved aside with the old folder: take the new one's
        handle = run_folder.lock(cfgs.run_dir)
      code = ACTIONS.index(claim.action) * 2 + (claim.run_dir != cfgs.run_dir)
    finally:
      if processes > 1:
        code = int(multihost_utils.broadcast_one_to_all(np.int32(code)))
  else:
    code = int(multihost_utils.broadcast_one_to_all(np.int32(code)))
  if claim is None:
    if code < 0:
      raise run_folder.RunFolderError(f"{cfgs.run_dir}: process 0 refused the run folder")
    beside = code % 2 == 1
    claim = run_folder.Claim(cfgs.run_dir / cfgs.run.mode if beside else cfgs.run_dir,
                             ACTIONS[code // 2], {"attempts": []},
                             cfgs.run_dir if beside and cfgs.run.mode == "eval" else None)
  if claim.action != "complete" and is_main:
    run_folder.start_attempt(claim, argv)
  return claim, handle


def _already_complete(claim, lock_handle) -> dict | None:
  if lock_handle is not None:
    lock_handle.close()
  progress = claim.record.get("progress", {})
  done = f"{progress['steps']} steps" if "steps" in progress else "its compile"
  print(f"run {claim.run_dir} is already complete ({done}, status ok); nothing changed. Set a "
        f"larger run.steps to continue it, or run.resume=False to move it aside and start afresh")
  path = claim.run_dir / ("aot.json" if claim.record.get("mode") == "aot" else "summary.json")
  return summary.read_json(path)


def main(gin_files, bindings, search_paths=(), dry_run: bool = False) -> dict | None:
  """Parses gin and runs; returns the summary (None for --dry_run)."""
  cfgs, files = api.read(gin_files, bindings, search_paths)
  ident = identity(cfgs)
  argv = list(sys.argv)
  if cfgs.run.mode == "aot":
    loaded = api.place(cfgs, files, abstract=True)  # a bad config fails before any file is written
    claim, handle = claim_folder(cfgs, None, ident, argv)
    if claim.action == "complete":
      return _already_complete(claim, handle)
    extra = {"fingerprint": claim.record.get("fingerprint"), "attempt": claim.attempt}
    return execute.attempt(claim, lambda: aot_entry.run_aot_mode(
        loaded, out_dir=claim.run_dir, extra=extra), handle)
  if dry_run:
    mesh = cfgs.mesh.abstract()
    api.validate(cfgs, mesh)
    print(summary.dry_run_report(cfgs, mesh, list(files)))
    return None
  with StopRequested() as stop:  # SIGTERM from here on is recorded, never a silent exit 143
    loaded = api.place(cfgs, files)
    claim, handle = claim_folder(cfgs, loaded.mesh, ident, argv)
    if claim.action == "complete":
      return _already_complete(claim, handle)
    return execute.attempt(claim, lambda: execute.execute(loaded, claim, stop), handle)
