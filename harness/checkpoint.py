"""Orbax checkpoints of (params, optimizer state, step): async saves, restore of the latest."""
from __future__ import annotations

import logging
import pathlib
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
                                             create=True, cleanup_tmp_directories=True))

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
    state = self._mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
    log.info("resumed from %s", self.directory / str(step))
    return state, step

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
