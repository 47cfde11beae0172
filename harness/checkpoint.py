"""Orbax checkpoints of (params, optimizer state, step): async saves, restore of the latest."""
from __future__ import annotations

import gc
import hashlib
import logging
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
# orbax registers its own array handler with this store; ours keeps it (orbax-checkpoint is pinned).
from orbax.checkpoint._src.metadata import array_metadata_store

from harness.errors import UserError

log = logging.getLogger(__name__)

# Orbax saves a replicated array in slices, one per replica, so that each device moves a part
# to the host. Below this size a slice costs more in dispatch (an op per slice, compiled per
# shape) than it saves in transfer: a small model's save took 1.2 s, most of it in slicing.
MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL = 1 << 20


def _save_small_arrays_whole() -> None:
  """Registers orbax's array handler with the slice threshold (orbax warns on any override)."""
  absl_log = logging.getLogger("absl")
  level = absl_log.level
  absl_log.setLevel(logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            min_slice_bytes_for_replica_parallel=MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL,
            array_metadata_store=array_metadata_store.Store()),
        override=True)
  finally:
    absl_log.setLevel(level)


class Checkpointer:
  """Saves every `every` steps (and on request); restores the newest readable checkpoint.

  Each save records the run's fingerprint and a checksum of the state in orbax's step metadata,
  so a checkpoint of another config is refused and one whose bytes changed on disk is detected
  and skipped in favour of the previous one.
  """

  def __init__(self, directory: pathlib.Path, every: int, keep: int = 3,
               fingerprint: str | None = None, read_only: bool = False):
    self.every = every
    self.directory = directory
    self.fingerprint = fingerprint
    self.read_only = read_only
    if jax.process_index() == 0 and not read_only:
      self._report_partial()
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpoint directory ready")
    _save_small_arrays_whole()
    self._mngr = ocp.CheckpointManager(
        directory.resolve(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else keep, enable_async_checkpointing=True,
            create=not read_only,
            cleanup_tmp_directories=not read_only, read_only=read_only),
        item_handlers=ocp.StandardCheckpointHandler())  # so item_metadata can read shapes

  def _report_partial(self) -> None:
    for partial in sorted(self.directory.glob("*.orbax-checkpoint-tmp*")):
      # A save cut short (e.g. SIGKILL) is never renamed to its step; orbax ignores it and
      # (cleanup_tmp_directories) deletes it below, so a resumed run leaves no partial behind.
      log.warning("skipping incomplete checkpoint %s", partial)

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def steps(self) -> list[int]:
    return sorted(self._mngr.all_steps(), reverse=True)

  def restore(self, abstract_state: Any) -> tuple[Any, int]:
    """The newest checkpoint that reads back intact, restored onto the abstract state's shardings.

    A checkpoint that cannot be read, or whose checksum differs from the one saved with it, is
    skipped with a warning (and moved to `checkpoints-corrupt/` unless read-only).
    """
    problems = []
    for step in self.steps():
      where = self.directory / str(step)
      self._check_config(step, where, abstract_state)
      try:
        state = self._restore_verified(step, abstract_state)
      except _Unreadable as err:
        log.warning("checkpoint %s is unreadable (%s); trying the previous one", where, err)
        problems.append(f"{step}: {err}")
        self._set_aside(step)
        continue
      log.info("resumed from %s", where)
      return state, step
    raise UserError(f"run.resume=True: no readable checkpoint in {self.directory} "
                    f"({'; '.join(problems)[:300]}); set run.resume=False to move the run aside")

  def _check_config(self, step: int, where: pathlib.Path, abstract_state: Any) -> None:
    stored = self._metadata(step).get("fingerprint")
    if self.fingerprint and stored and stored != self.fingerprint:
      raise UserError(f"run.resume=True: checkpoint {where} was written by another config "
                      f"(fingerprint {stored}, this config {self.fingerprint}); set "
                      f"run.resume=False to move the run aside or choose another run.run_name")
    try:
      mismatch = _first_mismatch(self._mngr.item_metadata(step), abstract_state)
    except Exception:  # pylint: disable=broad-except
      mismatch = None  # unreadable metadata: the restore below decides
    if mismatch:
      raise UserError(f"run.resume=True: checkpoint {where} was written by another config "
                      f"({mismatch}); set run.resume=False to start afresh (the old run is "
                      f"moved aside) or choose another run.run_name")

  def _metadata(self, step: int) -> dict:
    try:
      return dict(self._mngr.metadata(step).custom_metadata or {})
    except Exception:  # pylint: disable=broad-except
      return {}

  def _restore_verified(self, step: int, abstract_state: Any) -> Any:
    try:
      state = self._mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as err:  # pylint: disable=broad-except  # any failure to read it back
      _discard_abandoned_reads()
      raise _Unreadable((str(err).splitlines() or [type(err).__name__])[0][:160]) from None
    expected = self._metadata(step).get("checksum")
    if expected is not None and checksum(state) != expected:
      raise _Unreadable("its bytes differ from what was saved (checksum mismatch)")
    return state

  def _set_aside(self, step: int) -> None:
    if self.read_only or jax.process_index() != 0:
      return
    aside = self.directory.with_name(self.directory.name + "-corrupt")
    aside.mkdir(exist_ok=True)
    source = self.directory / str(step)
    if source.exists():
      source.rename(aside / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    self._mngr.reload()

  def maybe_save(self, step: int, state: Any, force: bool = False) -> bool:
    """Starts an async save of the state after `step` steps when due (or forced)."""
    if not force and (self.every <= 0 or step % self.every):
      return False
    if self._mngr.latest_step() == step:
      return False
    meta = {"fingerprint": self.fingerprint, "checksum": checksum(state)}
    return self._mngr.save(step, args=ocp.args.StandardSave(state), force=True,
                           custom_metadata=meta)

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


class _Unreadable(Exception):
  """A checkpoint that does not read back as it was saved."""


@jax.jit
def _checksum_leaves(tree: Any) -> list[jax.Array]:
  """A position-weighted 32-bit sum of each leaf's bits: catches zeroed and overwritten bytes."""
  def one(x):
    x = jnp.asarray(x)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    if x.dtype == jnp.bool_:
      bits = x.astype(jnp.uint32)
    else:
      bits = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32).reshape(-1)
    weights = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + 1
    return jnp.sum(bits.reshape(-1) * weights, dtype=jnp.uint32)
  return [one(x) for x in jax.tree.leaves(tree)]


def checksum(tree: Any) -> str:
  """Hex digest of the state's leaf checksums (computed on device, fetched as a few words)."""
  words = [int(w) for w in jax.device_get(_checksum_leaves(tree))]
  return hashlib.sha256(",".join(map(str, words)).encode()).hexdigest()[:16]


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
