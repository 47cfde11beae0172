"""TraceReport: the overlap analysis of one profiler capture (harness.profiling.analyze)."""
from __future__ import annotations

import dataclasses
from typing import Any

from harness.outputs.record import Record, field


@dataclasses.dataclass(kw_only=True)
class TraceReport(Record):
  """What `analyze()` returns, `python -m harness.profiling --json` prints and summary.json keeps
  under `trace` (there without `per_step`). Times are seconds per step and device: the mean over
  captured steps of the mean over devices; intervals are unions, so collective + compute can
  exceed wall when they overlap.

  Keys:
    wall_s                first op start to last op end
    collective_s          time any collective runs (an async pair spans start → done)
    compute_s             time any other op runs
    exposed_collective_s  collective time with no compute running
    attention_s           time attention ops run (see attention_rule)
    overlap_fraction      1 - exposed / collective; null without collectives
    attention_share       attention_s / compute_s; null without compute
    collectives           {kind: {count, time_s}} per step, e.g. 'all-to-all'
    chunks                {head group: {collective_s, exposed_collective_s, compute_s}} of ops
                          whose scope names 'chunk<i>'
    platform              'cpu', 'tpu', ...
    steps                 captured steps analysed
    per_step              [{the keys above, devices, and with a step marker step, marker_s}]
                          (analyze() and --json only)
    module                the step's HLO module (most device time)
    modules               {module: {executions, time_s}} of every module in the capture
    devices               devices per step
    step_markers          StepTraceAnnotation markers found
    left_out_executions   executions of the step module outside every step marker
    attention_rule        'hlo op_name scopes' or 'op names': how attention ops were recognised
    capture               the capture folder read
    error                 only in summary.json, when the capture could not be read (the only key)
  """
  wall_s: float | None = field()
  collective_s: float | None = field()
  compute_s: float | None = field()
  exposed_collective_s: float | None = field()
  attention_s: float | None = field()
  overlap_fraction: float | None = field()
  attention_share: float | None = field()
  collectives: dict[str, dict[str, float]] | None = field()
  chunks: dict[str, dict[str, float]] | None = field()
  platform: str | None = field()
  steps: int | None = field()
  per_step: list[dict[str, Any]] | None = field(optional=True)
  module: str | None = field()
  modules: dict[str, dict[str, Any]] | None = field()
  devices: int | None = field()
  step_markers: int | None = field()
  left_out_executions: int | None = field()
  attention_rule: str | None = field()
  capture: str | None = field(optional=True)
  error: str | None = field(optional=True)

  @classmethod
  def failed(cls, message: str) -> TraceReport:
    """The entry of a capture that could not be analysed: only its error is written."""
    return cls.from_json({"error": message})

  def without_steps(self) -> TraceReport:
    """The report as summary.json keeps it: no per-step rows."""
    obj = self.to_json()
    obj.pop("per_step", None)
    return TraceReport.from_json(obj)
