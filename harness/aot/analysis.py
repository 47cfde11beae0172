"""Schedule analysis of a compiled TPU module: collectives, overlap, attribution and bounds."""
from __future__ import annotations

from typing import Sequence

from harness.aot import calibration
from harness.aot.attribution import KINDS, OpKinds
from harness.aot.hardware import ChipSpec
from harness.aot.hlo_parse import parse_module
from harness.aot.simulate import ScheduleSimulator


def _exposed(totals) -> float:
  """Exposed communication of a simulated step; float round-off of a fully exposed one is 0."""
  return max(0.0, totals.duration_s - totals.compute_s)


def _hidden_under(records, collective: str, compute_kind: str) -> float:
  """Seconds a step of `collective` link time that ran under compute of `compute_kind`."""
  return sum(r.hidden_by_kind_s.get(compute_kind, 0.0) * r.times for r in records
             if r.kind == collective)


def _bounds(module, kinds: OpKinds, hw: ChipSpec, coords, dims, wraparound) -> dict:
  """Predicted step under every corner of the uncertain costs (calibration.corners())."""
  scenarios = []
  for ends in calibration.corners():
    sim = ScheduleSimulator(module, hw, coords, dims, wraparound,
                            calibration.corner(hw.generation, ends), kinds)
    totals = sim.run()
    scenarios.append({**ends, "predicted_step_s": totals.duration_s,
                      "exposed_comm_s": _exposed(totals),
                      "compute_by_kind_s": sim.compute_by_kind_s})
  steps = [s["predicted_step_s"] for s in scenarios]
  return {"predicted_step_s_bounds": [min(steps), max(steps)], "bound_scenarios": scenarios,
          "bound_sources": calibration.sources(hw.generation)}


def analyze_hlo(text: str, hw: ChipSpec, device_coords: Sequence[Sequence[int]],
                dims: Sequence[int], wraparound: Sequence[bool] | None = None) -> dict:
  """Simulates the module's schedule; `device_coords[i]` is the chip of logical device i."""
  module = parse_module(text)
  wraparound = tuple(wraparound) if wraparound is not None else (False,) * len(dims)
  kinds = OpKinds(module)
  sim = ScheduleSimulator(module, hw, device_coords, dims, wraparound, kinds=kinds)
  totals = sim.run()
  exposed = _exposed(totals)
  hidden = totals.comm_s - exposed
  hidden = hidden if hidden > 1e-12 else 0.0  # float round-off of a fully exposed schedule
  overlap_room = min(totals.comm_s, totals.compute_s)
  collectives = {kind: {"count": c["count"], "async_count": c["async_count"],
                        "executed": c["executed"]}
                 for kind, c in sorted(sim.counts.items())}
  a2a_s = sim.comm_by_kind_s.get("all-to-all", 0.0)
  under_attention = _hidden_under(sim.async_records, "all-to-all", "attention")
  report = {
      "predicted_step_s": totals.duration_s,
      "compute_s": totals.compute_s,
      "comm_s": totals.comm_s,
      "exposed_comm_s": exposed,
      "hidden_comm_s": hidden,
      "hidden_fraction": hidden / overlap_room if overlap_room > 0 else 0.0,
      "compute_by_kind_s": sim.compute_by_kind_s,
      "comm_by_kind_s": sim.comm_by_kind_s,
      "layout_bytes": totals.layout_bytes,
      "hidden_under_attention_s": under_attention,
      "hidden_under_attention_fraction": under_attention / a2a_s if a2a_s > 0 else 0.0,
      "all_to_all_hidden_by_kind_s": {k: _hidden_under(sim.async_records, "all-to-all", k)
                                      for k in KINDS},
      "collectives": collectives,
      "async_collectives": [r.to_dict() for r in sim.async_records],
      "cost_sources": dict(sorted(sim.sources.items())),
      "unknown_trip_counts": sim.unknown_trip_counts,
  }
  report.update(_bounds(module, kinds, hw, device_coords, dims, wraparound))
  report.update(_calibrated(module, kinds, hw, device_coords, dims, wraparound))
  return report


def _calibrated(module, kinds: OpKinds, hw: ChipSpec, coords, dims, wraparound) -> dict:
  """The step with attention kernels at the generation's fitted efficiency (none if unfitted)."""
  fitted = calibration.fitted_attention_efficiency(hw.generation)
  if fitted is None:
    return {"predicted_step_s_calibrated": None, "calibration": None}
  pricing = calibration.Pricing(attention_efficiency=fitted.value)
  totals = ScheduleSimulator(module, hw, coords, dims, wraparound, pricing, kinds).run()
  return {"predicted_step_s_calibrated": totals.duration_s,
          "calibration": {"attention_efficiency": fitted.to_dict()}}
