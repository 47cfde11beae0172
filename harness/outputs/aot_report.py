"""AotReport: aot.json, a step compiled for a TPU topology on this machine and its predicted time."""
from __future__ import annotations

import dataclasses
from typing import Any

from harness.outputs.record import Record, field
from harness.outputs.run_summary import Attention, SequenceFromOlderKeys


@dataclasses.dataclass(kw_only=True)
class Topology(Record):
  """{name ('v5p:2x2x2'), generation, dims, num_chips, num_devices}."""
  name: str | None = field()
  generation: str | None = field()
  dims: list[int] | None = field()
  num_chips: int | None = field()
  num_devices: int | None = field()


@dataclasses.dataclass(kw_only=True)
class AotReport(SequenceFromOlderKeys):
  """aot.json (DESIGN.md §3.4; docs/aot.md explains each cost): harness.aot.run_aot's report, with
  attention, mesh, fingerprint and attempt added by `run.mode='aot'`. Seconds are per step.

  Always:
    topology                 Topology {name, generation, dims, num_chips, num_devices}
    step                     'train' or 'eval'
    libtpu_flags             the flags compiled with; flags_applied_via 'compiler_options'
    hardware                 the generation's constants (harness.aot.hardware.ChipSpec)
    hbm_capacity_bytes       published HBM per device; hbm_limit_bytes what libtpu lets a program use
    fits_hbm                 libtpu's verdict; hbm_bytes, hbm_margin_bytes (limit - used; from the
                             out-of-memory message when it does not fit, else null)
    compile_time_s           seconds the compile took here
    error                    null, or 'does not fit in HBM: ...' (then nothing below is written)
  When it compiled:
    memory                   {argument, output, temp, alias, generated_code} bytes
    predicted_step_s         simulated step: compute_s + exposed_comm_s
    compute_s, comm_s        compute time; link time of every collective
    exposed_comm_s, hidden_comm_s  communication not hidden / hidden under compute
    hidden_fraction          hidden / min(comm, compute)
    compute_by_kind_s        {attention, matmul, layout, other}; comm_by_kind_s {collective kind: s}
    layout_bytes             bytes moved by copies and relayouts
    hidden_under_attention_s, hidden_under_attention_fraction  all-to-all hidden by attention
    all_to_all_hidden_by_kind_s  {compute kind: s} of all-to-all hidden under it
    collectives              {kind: {count, async_count, executed}}
    async_collectives        per async collective: its kind, link time and the compute between its
                             start and done
    cost_sources             {source: ops priced by it}; unknown_trip_counts loops assumed once
    predicted_step_s_bounds  [lo, hi] over the corners of the uncertain costs; bound_scenarios
                             each corner's step; bound_sources where each range comes from
    predicted_step_s_calibrated, calibration  attention at the fitted efficiency (null if unfitted)
  With run.mode='aot':
    attention                Attention {variant, num_chunks, kernel, pipelined_projections}
    mesh                     {axis: size}; fingerprint, attempt as in summary.json
  """
  topology: Topology | None = field(nested=Topology)
  step: str | None = field(optional=True)
  libtpu_flags: list[str] | None = field()
  flags_applied_via: str | None = field()
  hardware: dict[str, Any] | None = field()
  hbm_capacity_bytes: int | None = field()
  hbm_limit_bytes: int | None = field()
  hbm_margin_bytes: float | None = field()
  fits_hbm: bool | None = field()
  hbm_bytes: int | None = field()
  error: str | None = field()
  compile_time_s: float | None = field()
  memory: dict[str, int] | None = field(optional=True)
  predicted_step_s: float | None = field(optional=True)
  compute_s: float | None = field(optional=True)
  comm_s: float | None = field(optional=True)
  exposed_comm_s: float | None = field(optional=True)
  hidden_comm_s: float | None = field(optional=True)
  hidden_fraction: float | None = field(optional=True)
  compute_by_kind_s: dict[str, float] | None = field(optional=True)
  comm_by_kind_s: dict[str, float] | None = field(optional=True)
  layout_bytes: float | None = field(optional=True)
  hidden_under_attention_s: float | None = field(optional=True)
  hidden_under_attention_fraction: float | None = field(optional=True)
  all_to_all_hidden_by_kind_s: dict[str, float] | None = field(optional=True)
  collectives: dict[str, dict[str, int]] | None = field(optional=True)
  async_collectives: list[dict[str, Any]] | None = field(optional=True)
  cost_sources: dict[str, Any] | None = field(optional=True)
  unknown_trip_counts: Any = field(optional=True)
  predicted_step_s_bounds: list[float] | None = field(optional=True)
  bound_scenarios: list[dict[str, Any]] | None = field(optional=True)
  bound_sources: dict[str, Any] | None = field(optional=True)
  predicted_step_s_calibrated: float | None = field(optional=True)
  calibration: dict[str, Any] | None = field(optional=True)
  attention: Attention | None = field(nested=Attention, optional=True)
  mesh: dict[str, int] | None = field(optional=True)
  fingerprint: str | None = field(optional=True)
  attempt: int | None = field(optional=True)
  # Not written by the harness: tokens per sample as older reports stored it, for the launcher.
  sequence_length: int | None = field(optional=True)

  @classmethod
  def of_run(cls, aot: dict[str, Any] | None, summary: dict[str, Any] | None) -> AotReport | None:
    """The report of an aot run: its aot.json, or its summary.json where an older harness kept
    the report there; None when it has neither."""
    obj = aot or summary
    return cls.from_json(obj) if isinstance(obj, dict) else None

  @property
  def has_prediction(self) -> bool:
    """Whether the report predicts a step time (a compile that fit)."""
    value = self.predicted_step_s
    return isinstance(value, (int, float)) and not isinstance(value, bool)
