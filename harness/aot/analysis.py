"""Schedule analysis of a compiled TPU module: collectives, overlap and a predicted step time."""
from __future__ import annotations

from typing import Sequence

from harness.aot.hardware import Hardware
from harness.aot.hlo_parse import parse_module
from harness.aot.simulate import ScheduleSimulator


def analyze_hlo(text: str, hw: Hardware, device_coords: Sequence[Sequence[int]],
                dims: Sequence[int], wraparound: Sequence[bool] | None = None) -> dict:
  """Simulates the module's schedule; `device_coords[i]` is the chip of logical device i."""
  module = parse_module(text)
  wraparound = tuple(wraparound) if wraparound is not None else (False,) * len(dims)
  sim = ScheduleSimulator(module, hw, device_coords, dims, wraparound)
  totals = sim.run()
  exposed = max(0.0, totals.duration_s - totals.compute_s)
  hidden = totals.comm_s - exposed
  hidden = hidden if hidden > 1e-12 else 0.0  # float round-off of a fully exposed schedule
  overlap_room = min(totals.comm_s, totals.compute_s)
  collectives = {kind: {"count": c["count"], "async_count": c["async_count"],
                        "executed": c["executed"]}
                 for kind, c in sorted(sim.counts.items())}
  return {
      "predicted_step_s": totals.duration_s,
      "compute_s": totals.compute_s,
      "comm_s": totals.comm_s,
      "exposed_comm_s": exposed,
      "hidden_comm_s": hidden,
      "hidden_fraction": hidden / overlap_room if overlap_room > 0 else 0.0,
      "collectives": collectives,
      "async_collectives": [r.to_dict() for r in sim.async_records],
      "cost_sources": dict(sorted(sim.sources.items())),
      "unknown_trip_counts": sim.unknown_trip_counts,
  }
