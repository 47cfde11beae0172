"""Interval arithmetic for one device timeline: collective, compute and exposed time."""
from __future__ import annotations

import dataclasses
from typing import Iterable

Interval = tuple[float, float]


def union(intervals: Iterable[Interval]) -> list[Interval]:
  """Sorted, disjoint intervals covering exactly the input; empty ones vanish."""
  merged: list[list[float]] = []
  for start, end in sorted(i for i in intervals if i[1] > i[0]):
    if merged and start <= merged[-1][1]:
      merged[-1][1] = max(merged[-1][1], end)
    else:
      merged.append([start, end])
  return [(s, e) for s, e in merged]


def measure(intervals: Iterable[Interval]) -> float:
  """Length of the union (overlapping intervals are counted once)."""
  return sum(e - s for s, e in union(intervals))


def subtract(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
  """The parts of union(a) that no interval of b covers."""
  cover = union(b)
  out: list[Interval] = []
  j = 0
  for start, end in union(a):
    # Intervals of `cover` ending before `start` can never matter again: a is sorted.
    while j < len(cover) and cover[j][1] <= start:
      j += 1
    cursor, k = start, j
    while k < len(cover) and cover[k][0] < end:
      if cover[k][0] > cursor:
        out.append((cursor, cover[k][0]))
      cursor = max(cursor, cover[k][1])
      k += 1
    if cursor < end:
      out.append((cursor, end))
  return out


@dataclasses.dataclass(frozen=True)
class Breakdown:
  """Times (same unit as the input) of one device over one step."""
  collective: float
  compute: float
  exposed_collective: float
  attention: float
  wall: float

  @property
  def overlap_fraction(self) -> float | None:
    """1 - exposed/collective; None when the step has no collective time."""
    if self.collective <= 0:
      return None
    return 1.0 - self.exposed_collective / self.collective


def breakdown(collective: Iterable[Interval], compute: Iterable[Interval],
              attention: Iterable[Interval] = ()) -> Breakdown:
  """Collective, compute and exposed-collective time of one device timeline."""
  collective, compute, attention = union(collective), union(compute), union(attention)
  everything = union(collective + compute)
  wall = everything[-1][1] - everything[0][0] if everything else 0.0
  return Breakdown(
      collective=measure(collective),
      compute=measure(compute),
      exposed_collective=measure(subtract(collective, compute)),
      attention=measure(attention),
      wall=wall)
