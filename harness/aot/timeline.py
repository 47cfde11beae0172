"""Clocks and records of the schedule simulation: totals by kind, open async collectives."""
from __future__ import annotations

import collections
import dataclasses

from harness.aot.hlo_parse import Instruction

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
  compute_between_by_kind_s: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  hidden_by_kind_s: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  ops_between: list[dict] = dataclasses.field(default_factory=list)
  num_ops_between: int = 0
  exposed_s: float = 0.0
  hidden_s: float = 0.0
  issue_s: float = 0.0
  link_begin_s: float = 0.0
  link_end_s: float = 0.0

  def add_op(self, instr: Instruction, begin: float, seconds: float, by_kind: dict) -> None:
    """Accounts an op running [begin, begin + seconds) on the compute stream while this is open."""
    self.compute_between_s += seconds
    if seconds <= 0:
      return
    self.compute_between_by_kind_s.update(by_kind)
    # The share of the transfer window this op covers, split over the kinds of compute it holds
    # (a nested loop's exposed waits belong to no kind).
    overlap = min(begin + seconds, self.link_end_s) - max(begin, self.link_begin_s)
    if overlap > 0:
      for kind, kind_s in by_kind.items():
        self.hidden_by_kind_s[kind] += overlap * kind_s / seconds
    self.num_ops_between += 1
    kind = max(by_kind, key=by_kind.get) if by_kind else "other"
    self.ops_between.append({"name": instr.name, "opcode": instr.opcode, "op_name": instr.op_name,
                             "kind": kind, "seconds": seconds})

  def to_dict(self) -> dict:
    ops = sorted(self.ops_between, key=lambda o: -o["seconds"])[:MAX_OPS_LISTED]
    return {"name": self.name, "kind": self.kind, "computation": self.computation,
            "bytes": self.bytes, "group_size": self.group_size, "times": self.times,
            "comm_s": self.comm_s, "compute_between_s": self.compute_between_s,
            "compute_between_by_kind_s": dict(sorted(self.compute_between_by_kind_s.items())),
            "hidden_by_kind_s": dict(sorted(self.hidden_by_kind_s.items())),
            "num_ops_between": self.num_ops_between, "exposed_s": self.exposed_s,
            "hidden_s": self.hidden_s, "ops_between": ops}


@dataclasses.dataclass
class Totals:
  """Time of one pass over a computation, and what it was made of."""
  duration_s: float = 0.0
  compute_s: float = 0.0
  comm_s: float = 0.0
  compute_by_kind_s: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  comm_by_kind_s: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  layout_bytes: float = 0.0

  def add(self, other: "Totals", times: int) -> None:
    self.duration_s += times * other.duration_s
    self.compute_s += times * other.compute_s
    self.comm_s += times * other.comm_s
    self.layout_bytes += times * other.layout_bytes
    for kind, seconds in other.compute_by_kind_s.items():
      self.compute_by_kind_s[kind] += times * seconds
    for kind, seconds in other.comm_by_kind_s.items():
      self.comm_by_kind_s[kind] += times * seconds


@dataclasses.dataclass
class State:
  """Clocks of one pass: compute stream time, when the link frees up, and open async collectives."""
  now: float = 0.0
  link_free: float = 0.0
  totals: Totals = dataclasses.field(default_factory=Totals)
  pending: dict = dataclasses.field(default_factory=dict)
  alias: dict = dataclasses.field(default_factory=dict)

  def started_by(self, instr: Instruction) -> str | None:
    """The open async collective this instruction consumes (directly or through aliases), if any."""
    for operand in instr.operands:
      name = self.alias.get(operand, operand)
      if name in self.pending:
        return name
    return None

  def run(self, instr: Instruction, duration: float, nested: Totals) -> None:
    """Runs an op (or a nested computation) of `duration` on the compute stream."""
    for rec in self.pending.values():
      rec.add_op(instr, self.now, duration, nested.compute_by_kind_s)
    self.now += duration
    self.totals.add(nested, 1)  # its duration is superseded by the clock in result()

  def collective(self, kind: str, seconds: float) -> None:
    """A synchronous collective: waits for the link, then blocks compute for its time."""
    self.now = self.link_free = max(self.now, self.link_free) + seconds
    self.totals.comm_s += seconds
    self.totals.comm_by_kind_s[kind] += seconds

  def finish(self, name: str) -> AsyncCollective:
    """Waits for an open collective's transfer; records what it exposed."""
    rec = self.pending.pop(name)
    rec.exposed_s = max(0.0, rec.link_end_s - self.now)
    rec.hidden_s = max(0.0, rec.comm_s - rec.exposed_s)
    self.now = max(self.now, rec.link_end_s)
    return rec

  def result(self) -> Totals:
    """The pass's totals, its duration being the compute stream's clock."""
    self.totals.duration_s = self.now
    return self.totals
