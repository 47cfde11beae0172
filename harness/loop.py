"""The timed step loop shared by train and eval: pipelined dispatch, timing, progress, stops."""
from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from typing import Any, Callable

import jax

StepFn = Callable[[Any, int], tuple[Any, dict]]  # (state, step) → (state, device metrics)
OnStep = Callable[[int, dict, float], None]  # (step, host metrics, seconds) → None


class NanError(RuntimeError):
  """A metric became NaN or Inf."""


class StopRequested:
  """Turns SIGTERM (preemption) into a request to stop after the current step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: nobody can deliver SIGTERM to us anyway
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def check_finite(step: int, metrics: dict[str, float], where: str) -> None:
  # The loss goes first: metrics arrive sorted by name, and NaN inputs poison all of them.
  for name in sorted(metrics, key=lambda n: n != "loss"):
    value = metrics[name]
    if not math.isfinite(value):
      raise NanError(f"{name}={value} at step {step} ({where})")


@dataclasses.dataclass
class LoopState:
  state: Any
  last_step: int = -1  # last step whose metrics were fetched
  stopped_early: bool = False


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
  """A tqdm bar on a terminal of process 0, else None."""
  if not (enabled and sys.stderr.isatty() and jax.process_index() == 0):
    return None
  from tqdm import tqdm
  return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)


def run_loop(step_fn: StepFn, state: Any, first: int, last: int, *, on_step: OnStep,
             window, stop: StopRequested, sync_after: Callable[[int], bool],
             on_synced: Callable[[int, Any], None], bar=None) -> LoopState:
  """Runs steps [first, last); step i's metrics are fetched after step i+1 is dispatched.

  Step time = time between consecutive completions, so host work overlaps device work.
  `sync_after(i)` forces step i to be fetched before i+1 is dispatched (checkpoints), then
  `on_synced(i + 1, state)` runs with the state after step i.
  """
  out = LoopState(state)
  pending: tuple[int, dict] | None = None
  clock = [time.perf_counter()]

  def finish(step: int, metrics: dict) -> None:
    host = {k: float(v) for k, v in jax.device_get(metrics).items()}
    now = time.perf_counter()
    on_step(step, host, now - clock[0])
    clock[0] = now
    out.last_step = step
    if bar is not None:
      bar.update(1)
      bar.set_postfix({k: f"{v:.4g}" for k, v in host.items()}, refresh=False)

  for step in range(first, last):
    window.before_step(step)
    with window.step_annotation(step):
      out.state, metrics = step_fn(out.state, step)
    if pending is not None:
      finish(*pending)
    pending = (step, metrics)
    window.after_step(step, metrics)
    if sync_after(step) or stop.requested:
      finish(*pending)
      pending = None
      on_synced(step + 1, out.state)
      clock[0] = time.perf_counter()  # keep checkpoint I/O out of the next step's time
      if stop.requested:
        out.stopped_early = step + 1 < last
        break
  if pending is not None:
    finish(*pending)
  return out
