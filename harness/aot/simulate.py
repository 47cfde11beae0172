"""Event simulation over a scheduled HLO module: one compute stream, one ICI stream.

Instructions run in schedule order on the compute stream. A synchronous collective waits for the link
and blocks compute for its whole time. An async start queues its transfer on the link (one at a time)
and compute goes on; its done (`*-done`, or a collective fusion's first consumer) waits for the
transfer if it has not finished — that wait is exposed communication. While loops (a scan over
layers) run their body trip-count times; calls and conditionals (the longest branch) are walked
inline. Every second the compute stream is not computing is exposed
communication, so predicted = compute + exposed, and hidden = comm - exposed.

Every compute op is attributed to a kind (attribution.KINDS); totals by kind, link time by collective
kind and bytes moved by layout ops are public on `totals` after `run()`. A `Pricing`
(calibration.py) sets how the uncertain costs are priced: layout ops at XLA's estimate, their HBM
roofline or the larger of the two; attention kernels at an efficiency; links at an efficiency.
"""
from __future__ import annotations

import collections
import re
from typing import Sequence

from harness.aot import costs
from harness.aot.attribution import KINDS, OpKinds
from harness.aot.calibration import NOMINAL, Pricing
from harness.aot.hardware import ChipSpec
from harness.aot.hlo_parse import Computation, Instruction, Module
from harness.aot.timeline import AsyncCollective, State, Totals


class ScheduleSimulator:
  """Walks a parsed module from its entry and accumulates times, counts and async records."""

  def __init__(self, module: Module, hw: ChipSpec, device_coords: Sequence[Sequence[int]],
               dims: Sequence[int], wraparound: Sequence[bool], pricing: Pricing = NOMINAL,
               kinds: OpKinds | None = None):
    self.module, self.hw, self.pricing = module, hw, pricing
    self.kinds = kinds or OpKinds(module)
    # Slices of 2D generations still print 3 coordinates (z = 0): keep one per slice dimension.
    self.coords = [tuple(c)[:len(dims)] for c in device_coords]
    self.dims, self.wraparound = tuple(dims), tuple(wraparound)
    self.counts = collections.defaultdict(collections.Counter)
    self.sources = collections.Counter()
    self.async_records: list[AsyncCollective] = []
    self.unknown_trip_counts = 0
    self.totals = Totals()

  def run(self) -> Totals:
    """Simulates the entry once; the result is also kept as `totals`."""
    self.totals = self.simulate(self.module.entry, 1)
    return self.totals

  @property
  def compute_by_kind_s(self) -> dict[str, float]:
    """Compute seconds a step by kind (attention, matmul, layout, other) after `run()`."""
    return {kind: self.totals.compute_by_kind_s.get(kind, 0.0) for kind in KINDS}

  @property
  def comm_by_kind_s(self) -> dict[str, float]:
    """Link seconds a step by collective kind, synchronous and async, after `run()`."""
    return dict(sorted(self.totals.comm_by_kind_s.items()))

  def _comm(self, kind: str, instr: Instruction, comp: Computation,
            collective: Instruction | None = None) -> tuple[float, float, int]:
    """(input bytes, seconds, group size); groups come from the collective itself when wrapped."""
    bytes_in = costs.operand_bytes(instr, comp)
    groups = (collective or instr).replica_groups(len(self.coords))
    group = groups[0]
    coords = [self.coords[i] for i in group if i < len(self.coords)]
    seconds = costs.collective_seconds(kind, bytes_in, coords, self.dims, self.wraparound, self.hw,
                                       self.pricing.ici_efficiency)
    return bytes_in, seconds, len(group)

  def _async_kind(self, instr: Instruction) -> tuple[str, Instruction] | None:
    """(kind, the collective instruction) an instruction starts asynchronously, else None.

    `*-start` ops, `async-start` wrappers, `call-start`s of a collective (what offloading it to
    SparseCore emits) and fusions that contain a collective (what async collective fusion emits:
    the fusion starts it, its first consumer is the matching done) all count.
    """
    if instr.opcode.endswith("-start") and costs.collective_kind(instr.opcode):
      return costs.collective_kind(instr.opcode), instr
    if instr.opcode not in ("async-start", "call-start", "fusion"):
      return None
    key = "to_apply" if instr.opcode == "call-start" else "calls"
    called = self.module.computations.get(instr.attr_computation(key) or "")
    for inner in (called.instructions if called else ()):
      if costs.collective_kind(inner.opcode) and not inner.opcode.endswith("-start"):
        return costs.collective_kind(inner.opcode), inner
    return None

  def trip_count(self, instr: Instruction) -> int:
    """known_trip_count, else N from a `counter < N` loop condition, else 1 (and counted as unknown)."""
    if instr.known_trip_count is not None:
      return instr.known_trip_count
    cond = self.module.computations.get(instr.attr_computation("condition") or "")
    if cond is not None and cond.root.opcode == "compare" and "direction=LT" in cond.root.attrs:
      bound = cond.by_name.get(cond.root.operands[-1])
      if bound is not None and bound.opcode == "constant" and re.fullmatch(r"-?\d+", bound.args):
        return int(bound.args)
    self.unknown_trip_counts += 1
    return 1

  def _nested(self, instr: Instruction, times: int) -> Totals | None:
    """Totals of control flow (while / call / conditional), None for other instructions."""
    comps = self.module.computations
    if instr.opcode == "while":
      trips = self.trip_count(instr)
      total = Totals()
      total.add(self.simulate(instr.attr_computation("body"), times * trips), trips)
      total.add(self.simulate(instr.attr_computation("condition"), times * trips), trips)
      return total
    if instr.opcode == "call" and instr.attr_computation("to_apply") in comps:
      return self.simulate(instr.attr_computation("to_apply"), times)
    if instr.opcode == "conditional":
      branches = [self.simulate(c, times) for c in instr.called if c in comps]
      return max(branches, key=lambda t: t.duration_s) if branches else Totals()
    if instr.opcode == "async-start" and self._async_kind(instr) is None:
      called = instr.attr_computation("calls")
      return self.simulate(called, times) if called in comps else Totals()
    return None

  def simulate(self, comp_name: str, times: int) -> Totals:
    """One pass over a computation's schedule; `times` is how often the caller runs it."""
    comp = self.module.computations[comp_name]
    state = State()
    for instr in comp.instructions:
      nested = self._nested(instr, times)
      if nested is not None:
        state.run(instr, nested.duration_s, nested)
        continue
      started = self._async_kind(instr)
      if started is not None:
        self._start(*started, instr, comp, times, state)
        continue
      started = state.started_by(instr)
      if started and instr.opcode in ("get-tuple-element", "async-update", "bitcast"):
        state.alias[instr.name] = started
        continue
      if started:
        self.async_records.append(state.finish(started))
        if instr.opcode.endswith("-done"):
          continue
      kind = costs.collective_kind(instr.opcode)
      if kind is not None:
        _, seconds, _ = self._comm(kind, instr, comp)
        state.collective(kind, seconds)
        self.counts[kind]["count"] += 1
        self.counts[kind]["executed"] += times
        continue
      op = self._compute(instr, comp)
      state.run(instr, op.duration_s, op)
    for name in list(state.pending):  # a start whose done lies outside this computation
      self.async_records.append(state.finish(name))
    return state.result()

  def _compute(self, instr: Instruction, comp: Computation) -> Totals:
    """One compute op's time under the pricing, attributed to its kind."""
    seconds, source = costs.compute_seconds(instr, comp, self.hw,
                                            self.pricing.attention_efficiency)
    self.sources[source] += 1
    kind = "other" if source == "free" else self.kinds.kind(instr)
    moved = 0.0
    if kind == "layout":
      moved = self.kinds.moved_bytes(instr, comp)
      roofline = moved / self.hw.device_hbm_bandwidth
      if self.pricing.layout == "lo":
        seconds = min(seconds, roofline)
      elif self.pricing.layout == "hi":
        seconds = max(seconds, roofline)
    return Totals(seconds, seconds, 0.0, collections.Counter({kind: seconds}), layout_bytes=moved)

  def _start(self, kind: str, collective: Instruction, instr: Instruction, comp: Computation,
             times: int, state: State) -> None:
    bytes_in, seconds, group = self._comm(kind, instr, comp, collective)
    begin = max(state.now, state.link_free)
    state.link_free = begin + seconds
    state.totals.comm_s += seconds
    state.totals.comm_by_kind_s[kind] += seconds
    self.counts[kind]["count"] += 1
    self.counts[kind]["async_count"] += 1
    self.counts[kind]["executed"] += times
    state.pending[instr.name] = AsyncCollective(
        instr.name, kind, comp.name, bytes_in, group, seconds, times, issue_s=state.now,
        link_begin_s=begin, link_end_s=state.link_free)
