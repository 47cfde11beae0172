"""What a phase needs from the run around it: configs, mesh, profiler window, step logging."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from jax.sharding import Mesh

from harness.configurables import RunConfig


@dataclasses.dataclass(frozen=True)
class RunContext:
  run: RunConfig
  mesh: Mesh
  window: Any  # harness.profiler_window.ProfilerWindow
  log_step: Callable[[int, float, dict, bool], None]  # (step, seconds, metrics, timed)
