"""Orbax checkpoints of (params, optimizer state, step): async saves, restore of the latest."""
from __future__ import annotations

import gc
import logging
import pathlib
import sys
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


class Checkpointer:
  """Saves every `every` steps (and on request); restores the newest complete checkpoint."""

  def __init__(self, directory: pathlib.Path, every: int, keep: int = 3, fresh: bool = False):
    self.every = every
    self.directory = directory
    if jax.process_index() == 0:
      self._tidy(fresh)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpoint directory ready")
    self._mngr = ocp.CheckpointManager(
        directory.resolve(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                             create=True, cleanup_tmp_directories=True),
        item_handlers=ocp.StandardCheckpointHandler())  # so item_metadata can read shapes

  def _tidy(self, fresh: bool) -> None:
    directory = self.directory
    if fresh and directory.exists() and any(directory.iterdir()):
      aside = directory.with_name(f"{directory.name}-{time.strftime('%Y%m%d-%H%M%S')}")
      directory.rename(aside)
      log.warning("run.resume=False: earlier checkpoints kept in %s", aside)
    for partial in sorted(directory.glob("*.orbax-checkpoint-tmp*")):
      # A save cut short (e.g. SIGKILL) is never renamed to its step; orbax ignores it and
      # (cleanup_tmp_directories) deletes it below, so a resumed run leaves no partial behind.
      log.warning("skipping incomplete checkpoint %s", partial)

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def restore(self, abstract_state: Any) -> tuple[Any, int]:
    """The newest complete checkpoint restored onto the abstract state's shardings."""
    step = self._mngr.latest_step()
    where = self.directory / str(step)
    mismatch = _first_mismatch(self._mngr.item_metadata(step), abstract_state)
    if mismatch:
      raise ValueError(f"run.resume=True: checkpoint {where} was written by another config "
                       f"({mismatch}); set run.resume=False to start afresh (the old checkpoints "
                       f"are moved aside) or choose another run.run_name")
    try:
      state = self._mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except (ValueError, KeyError) as err:  # shapes or tree of another model/optimizer config
      first = (str(err).splitlines() or [type(err).__name__])[0]
    else:
      log.info("resumed from %s", where)
      return state, step
    _discard_abandoned_reads()
    raise ValueError(f"run.resume=True: checkpoint {where} does not fit this config "
                     f"({first[:160]}); set run.resume=False or choose another run.run_name")

  def maybe_save(self, step: int, state: Any, force: bool = False) -> bool:
    """Starts an async save of the state after `step` steps when due (or forced)."""
    if not force and (self.every <= 0 or step % self.every):
      return False
    if self._mngr.latest_step() == step:
      return False
    return self._mngr.save(step, args=ocp.args.StandardSave(state), force=True)

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Leaf shapes by path; keys as plain names so dicts, tuples and namedtuples compare equal."""
  def name(key) -> str:
    return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))
  return {"/".join(name(k) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _first_mismatch(stored: Any, wanted: Any) -> str | None:
  """Where a checkpoint's arrays differ from the state this config builds, or None."""
  if stored is None:  # no metadata to compare: let the restore itself decide
    return None
  have, want = _leaf_shapes(stored), _leaf_shapes(wanted)
  for path in sorted(want.keys() | have.keys(), key=lambda p: (not p.startswith("params"), p)):
    if path not in have:
      return f"{path} is missing there"
    if path not in want:
      return f"{path} is not in this config's state"
    if have[path] != want[path]:
      return f"{path} has shape {have[path]} there, {want[path]} here"
  return None


def _discard_abandoned_reads() -> None:
  """Collects the array reads a failed restore left pending, without their tracebacks.

  Otherwise each one prints "Exception ignored in <coroutine ...>" at exit: thousands of lines
  after the one-line error.
  """
  hook = sys.unraisablehook
  sys.unraisablehook = lambda _: None
  try:
    gc.collect()
  finally:
    sys.unraisablehook = hook
