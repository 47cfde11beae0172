"""Event simulation over a scheduled HLO module: one compute stream, one ICI stream.

Instructions run in schedule order on the compute stream. A synchronous collective waits for the link
and blocks compute for its whole time. An async start queues its transfer on the link (one at a time)
and compute goes on; its done (`*-done`, or a collective fusion's first consumer) waits for the
transfer if it has not finished — that wait is exposed communication. While loops (a scan over
layers) run their body trip-count times; calls and conditionals (the longest branch) are walked
inline. Every second the compute stream is not computing is exposed
communication, so predicted = compute + exposed, and hidden = comm - exposed.
"""
from __future__ import annotations

import collections
import dataclasses
import re
from typing import Sequence

from harness.aot import costs
from harness.aot.hardware import Hardware
from harness.aot.hlo_parse import Computation, Instruction, Module

MAX_OPS_LISTED = 30


@dataclasses.dataclass
class AsyncCollective:
  """One async collective: its transfer and the compute scheduled between its start and done."""
  name: str
  kind: str
  computation: str
  bytes: float
  group_size: int
  comm_s: float
  times: int = 1
  compute_between_s: float = 0.0
  ops_between: list[dict] = dataclasses.field(default_factory=list)
  num_ops_between: int = 0
  exposed_s: float = 0.0
  hidden_s: float = 0.0
  issue_s: float = 0.0
  link_end_s: float = 0.0

  def add_op(self, instr: Instruction, seconds: float) -> None:
    self.compute_between_s += seconds
    if seconds <= 0:
      return
    self.num_ops_between += 1
    self.ops_between.append({"name": instr.name, "opcode": instr.opcode, "op_name": instr.op_name,
                             "seconds": seconds})

  def to_dict(self) -> dict:
    ops = sorted(self.ops_between, key=lambda o: -o["seconds"])[:MAX_OPS_LISTED]
    return {"name": self.name, "kind": self.kind, "computation": self.computation,
            "bytes": self.bytes, "group_size": self.group_size, "times": self.times,
            "comm_s": self.comm_s, "compute_between_s": self.compute_between_s,
            "num_ops_between": self.num_ops_between, "exposed_s": self.exposed_s,
            "hidden_s": self.hidden_s, "ops_between": ops}


@dataclasses.dataclass
class Totals:
  """Time of one pass over a computation, and what it was made of."""
  duration_s: float = 0.0
  compute_s: float = 0.0
  comm_s: float = 0.0

  def add(self, other: "Totals", times: int) -> None:
    self.duration_s += times * other.duration_s
    self.compute_s += times * other.compute_s
    self.comm_s += times * other.comm_s


class ScheduleSimulator:
  """Walks a parsed module from its entry and accumulates times, counts and async records."""

  def __init__(self, module: Module, hw: Hardware, device_coords: Sequence[Sequence[int]],
               dims: Sequence[int], wraparound: Sequence[bool]):
    self.module, self.hw = module, hw
    # Slices of 2D generations still print 3 coordinates (z = 0): keep one per slice dimension.
    self.coords = [tuple(c)[:len(dims)] for c in device_coords]
    self.dims, self.wraparound = tuple(dims), tuple(wraparound)
    self.counts = collections.defaultdict(collections.Counter)
    self.sources = collections.Counter()
    self.async_records: list[AsyncCollective] = []
    self.unknown_trip_counts = 0

  def run(self) -> Totals:
    return self.simulate(self.module.entry, 1)

  def _comm(self, kind: str, instr: Instruction, comp: Computation,
            collective: Instruction | None = None) -> tuple[float, float, int]:
    """(input bytes, seconds, group size); groups come from the collective itself when wrapped."""
    bytes_in = costs.operand_bytes(instr, comp)
    groups = (collective or instr).replica_groups(len(self.coords))
    group = groups[0]
    coords = [self.coords[i] for i in group if i < len(self.coords)]
    seconds = costs.collective_seconds(kind, bytes_in, coords, self.dims, self.wraparound, self.hw)
    return bytes_in, seconds, len(group)

  def _async_kind(self, instr: Instruction) -> tuple[str, Instruction] | None:
    """(kind, the collective instruction) an instruction starts asynchronously, else None.

    `*-start` ops, `async-start` wrappers and fusions that contain a collective (what async collective
    fusion emits: the fusion starts it, its first consumer is the matching done) all count.
    """
    if instr.opcode.endswith("-start") and costs.collective_kind(instr.opcode):
      return costs.collective_kind(instr.opcode), instr
    if instr.opcode not in ("async-start", "fusion"):
      return None
    called = self.module.computations.get(instr.attr_computation("calls") or "")
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
    state = _State()
    for instr in comp.instructions:
      nested = self._nested(instr, times)
      if nested is not None:
        state.run(instr, nested.duration_s, nested.compute_s, nested.comm_s)
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
        state.now = state.link_free = max(state.now, state.link_free) + seconds
        state.comm += seconds
        self.counts[kind]["count"] += 1
        self.counts[kind]["executed"] += times
        continue
      seconds, source = costs.compute_seconds(instr, comp, self.hw)
      self.sources[source] += 1
      state.run(instr, seconds, seconds, 0.0)
    for name in list(state.pending):  # a start whose done lies outside this computation
      self.async_records.append(state.finish(name))
    return Totals(state.now, state.compute, state.comm)

  def _start(self, kind: str, collective: Instruction, instr: Instruction, comp: Computation,
             times: int, state: "_State") -> None:
    bytes_in, seconds, group = self._comm(kind, instr, comp, collective)
    begin = max(state.now, state.link_free)
    state.link_free = begin + seconds
    state.comm += seconds
    self.counts[kind]["count"] += 1
    self.counts[kind]["async_count"] += 1
    self.counts[kind]["executed"] += times
    state.pending[instr.name] = AsyncCollective(
        instr.name, kind, comp.name, bytes_in, group, seconds, times, issue_s=state.now,
        link_end_s=state.link_free)


@dataclasses.dataclass
class _State:
  """Clocks of one pass: compute stream time, when the link frees up, and open async collectives."""
  now: float = 0.0
  link_free: float = 0.0
  compute: float = 0.0
  comm: float = 0.0
  pending: dict = dataclasses.field(default_factory=dict)
  alias: dict = dataclasses.field(default_factory=dict)

  def started_by(self, instr: Instruction) -> str | None:
    """The open async collective this instruction consumes (directly or through aliases), if any."""
    for operand in instr.operands:
      name = self.alias.get(operand, operand)
      if name in self.pending:
        return name
    return None

  def run(self, instr: Instruction, duration: float, compute: float, comm: float) -> None:
    for rec in self.pending.values():
      rec.add_op(instr, duration)
    self.now += duration
    self.compute += compute
    self.comm += comm

  def finish(self, name: str) -> AsyncCollective:
    """Waits for an open collective's transfer; records what it exposed."""
    rec = self.pending.pop(name)
    rec.exposed_s = max(0.0, rec.link_end_s - self.now)
    rec.hidden_s = max(0.0, rec.comm_s - rec.exposed_s)
    self.now = max(self.now, rec.link_end_s)
    return rec
