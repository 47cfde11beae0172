"""AOT backend: every grid point compiled for its TPU topology here, with run.mode='aot'."""
from __future__ import annotations

from launch.sweep import Run, Sweep, expand


def aot_runs(sweep: Sweep) -> list[Run]:
  """One aot run per hardware and grid point (repeats and other modes dropped)."""
  return expand(sweep, modes=("aot",))
