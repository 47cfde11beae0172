"""Profiler capture window: steps [start_step, start_step + num_steps) traced into TensorBoard."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


class ProfilerWindow:
  """Starts and stops one jax.profiler capture around a window of training steps.

  Each capture is written to `{logdir}/plugins/profile/<session>/` with a session name
  that is unique per capture (jax.profiler.trace's own names have one-second resolution).
  Steps outside the window are untouched: nothing is traced and nothing blocks.
  """

  def __init__(self, logdir: str, *, enabled: bool, start_step: int, num_steps: int,
               all_hosts: bool = False, process_index: int = 0):
    if enabled and num_steps < 1:
      raise ValueError(f"profiler.num_steps={num_steps}: must be >= 1 when profiler.enabled")
    if enabled and start_step < 0:
      raise ValueError(f"profiler.start_step={start_step}: must be >= 0")
    self.logdir = logdir
    self.enabled = enabled and (all_hosts or process_index == 0)
    self.start_step = start_step
    self.num_steps = num_steps
    self.process_index = process_index
    self.all_hosts = all_hosts
    self._active: str | None = None
    self._captures: list[str] = []
    self._hlo_texts: dict[str, str] = {}

  @property
  def captures(self) -> list[str]:
    """Capture folders written so far."""
    return list(self._captures)

  @property
  def last_step(self) -> int:
    return self.start_step + self.num_steps - 1

  def in_window(self, step: int) -> bool:
    """Whether `step` is traced (its timing is distorted by the profiler)."""
    return self.enabled and self.start_step <= step <= self.last_step

  def step_annotation(self, step: int) -> contextlib.AbstractContextManager:
    """Marks a step in the trace (a no-op outside an active capture's process)."""
    if not self.enabled:
      return contextlib.nullcontext()
    return jax.profiler.StepTraceAnnotation("train", step_num=step)

  def add_hlo_text(self, name: str, hlo_text: str) -> None:
    """Saves compiled HLO text beside each capture so analysis can map ops to scopes."""
    self._hlo_texts[name] = hlo_text
    for capture in self._captures:
      self._write_hlo(capture)

  def before_step(self, step: int) -> None:
    """Starts the capture when `step` opens the window."""
    if self.enabled and self._active is None and step == self.start_step:
      self._start(step)

  def after_step(self, step: int, outputs: Any) -> None:
    """After the window's last step: waits for its device work, then stops the capture."""
    if self._active is not None and step >= self.last_step:
      jax.block_until_ready(outputs)
      self._stop()

  def close(self) -> None:
    """Stops an open capture (e.g. the loop ended early or raised)."""
    if self._active is not None:
      self._stop()

  def __enter__(self) -> "ProfilerWindow":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def _session_name(self, step: int) -> str:
    """'<UTC time>_step<N>', the same on every host so hosts share one capture folder."""
    seconds = int(time.time())
    if self.all_hosts and jax.process_count() > 1:
      # Host clocks straddle second boundaries; take process 0's.
      seconds = int(multihost_utils.broadcast_one_to_all(np.int64(seconds)))
      return f"{time.strftime('%Y_%m_%d_%H_%M_%S', time.gmtime(seconds))}_step{step}"
    base = f"{time.strftime('%Y_%m_%d_%H_%M_%S', time.gmtime(seconds))}_step{step}"
    name, n = base, 1
    while os.path.exists(os.path.join(self.logdir, "plugins", "profile", name)):
      n += 1
      name = f"{base}_{n}"
    return name

  def _start(self, step: int) -> None:
    session = self._session_name(step)
    options = jax.profiler.ProfileOptions()
    options.session_id = session  # The profiler names the capture folder after it.
    options.python_tracer_level = 0  # Python tracing slows every op dispatch in the window.
    try:
      jax.profiler.start_trace(self.logdir, profiler_options=options)
    except RuntimeError as e:  # Another trace is running: keep training, skip the capture.
      log.warning("profiler window at step %d not started: %s", step, e)
      return
    self._active = os.path.join(self.logdir, "plugins", "profile", session)
    log.info("profiler capture started at step %d -> %s", step, self._active)

  def _stop(self) -> None:
    capture, self._active = self._active, None
    try:
      jax.profiler.stop_trace()
    except RuntimeError as e:
      log.warning("profiler capture %s not stopped cleanly: %s", capture, e)
      return
    self._captures.append(capture)
    self._write_hlo(capture)
    log.info("profiler capture written: %s", capture)

  def _write_hlo(self, capture: str) -> None:
    for name, text in self._hlo_texts.items():
      with open(os.path.join(capture, f"{name}.hlo.txt"), "w") as f:
        f.write(text)
