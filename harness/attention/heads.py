"""Head-group planning for Ulysses: head padding, chunk ranges and the kv heads each chunk sends.

Rules (see docs/attention.md):
  * With `pad_heads`, q gets zero heads up to a multiple of the Ulysses degree D; without it,
    heads must already be a multiple of D.
  * The (padded) heads form n = heads / D units of D heads. C chunks take consecutive units; when
    C does not divide n, `chunk_sizing` says where the rest goes: 'larger_first' gives the first
    n % C chunks one unit more, 'remainder_last' (maxdiffusion's `ulysses_attention_chunks`) gives
    every chunk floor(n / C) units and the last one the rest. Every chunk is a multiple of D heads
    and the valid chunk counts are 1..n.
  * After a chunk's all-to-all, device j holds the chunk's q heads [a + j*s, a + (j+1)*s),
    s = size / D. Per device the chunk sends the fewest kv heads m (a divisor of s) such that local
    q head i reads kv slot i // (s / m), the kernels' GQA rule: MHA sends every kv head once; GQA
    and MQA send one kv head per run of s / m q heads that share it, replicated across devices
    where kv_heads < D.
  * kv heads are repeated locally to one per q head before the chunks are cut; a chunk with
    s / m > 1 sends every (s / m)-th one and repeats it on arrival. Its backward returns one kv
    gradient per q head and each group is summed once, after all chunks, so the bits do not depend
    on the chunk count; the price is a backward kv all-to-all as large as q's.
"""
from __future__ import annotations

import logging

from harness.attention.types import ChunkPlan
from harness.attention.types import HeadPlan
from harness.attention.types import Range
from harness.errors import UserError


def divisors(n: int) -> tuple[int, ...]:
  return tuple(d for d in range(1, n + 1) if n % d == 0)


def padded_head_count(heads: int, degree: int) -> int:
  return -(-heads // degree) * degree


CHUNK_SIZINGS = ("larger_first", "remainder_last")


def _units_per_chunk(units: int, num_chunks: int, sizing: str) -> list[int]:
  base, extra = divmod(units, num_chunks)
  if sizing == "remainder_last":
    # maxdiffusion #428: floor-sized chunks, the last one takes what is left.
    return [base] * (num_chunks - 1) + [units - base * (num_chunks - 1)]
  return [base + (1 if i < extra else 0) for i in range(num_chunks)]


def chunk_ranges(padded_heads: int, degree: int, num_chunks: int,
                 sizing: str = "larger_first") -> tuple[Range, ...]:
  """Consecutive head ranges, multiples of `degree`, sized by `sizing` (see the module doc)."""
  ranges, start = [], 0
  for units in _units_per_chunk(padded_heads // degree, num_chunks, sizing):
    ranges.append((start, start + units * degree))
    start += units * degree
  return tuple(ranges)


def _kv_of(head: int, heads: int, kv_heads: int) -> int:
  # Zero (padded) heads extend the last kv group: any kv head would do; this one adds no slot.
  return min(head, heads - 1) // (heads // kv_heads)


def _chunk_slab(start: int, stop: int, degree: int, heads: int, kv_heads: int) -> ChunkPlan:
  """The smallest per-device kv slab for q heads [start, stop) that keeps the kernels' GQA rule."""
  per_device = (stop - start) // degree
  for m in divisors(per_device):
    group = per_device // m
    fits = all(
        _kv_of(start + j * per_device + i, heads, kv_heads)
        == _kv_of(start + j * per_device + (i // group) * group, heads, kv_heads)
        for j in range(degree) for i in range(per_device))
    if fits:
      index = tuple(_kv_of(start + j * per_device + r * group, heads, kv_heads)
                    for j in range(degree) for r in range(m))
      return ChunkPlan(start, stop, index, m)
  raise AssertionError("m = per_device always fits")


def plan_heads(heads: int, kv_heads: int, degree: int, num_chunks: int,
               sizing: str = "larger_first") -> HeadPlan:
  """Plans chunks for already validated arguments (see `validate_heads`)."""
  padded = padded_head_count(heads, degree)
  chunks = tuple(_chunk_slab(a, b, degree, heads, kv_heads)
                 for a, b in chunk_ranges(padded, degree, num_chunks, sizing))
  return HeadPlan(heads, kv_heads, degree, padded, chunks)


def validate_heads(heads: int, kv_heads: int, degree: int, num_chunks: int, pad_heads: bool,
                   degree_binding: str) -> None:
  """Raises a one-line UserError when heads cannot be split as asked."""
  if kv_heads < 1 or heads % kv_heads:
    raise UserError(f"kv_heads={kv_heads} must divide heads={heads} (GQA/MQA)")
  if heads % degree and not pad_heads:
    units = padded_head_count(heads, degree) // degree
    raise UserError(
        f"heads={heads} is not a multiple of the Ulysses degree {degree_binding}={degree}: set "
        f"attention.pad_heads=True (then attention.num_chunks in 1..{units}) or use "
        f"{degree_binding} in {divisors(heads)}")
  units = padded_head_count(heads, degree) // degree
  if not 1 <= num_chunks <= units:
    raise UserError(
        f"attention.num_chunks={num_chunks} cannot split {heads} heads into groups of multiples of "
        f"{degree_binding}={degree}: valid choices 1..{units}")


def log_plan(plan: HeadPlan, variant: str, kernel: str) -> None:
  # Called while tracing, so it logs once per compiled shape.
  logging.info(
      "attention %s kernel=%s degree=%d heads=%d (padded %d) kv_heads=%d chunks=%s kv/device=%s%s",
      variant, kernel, plan.degree, plan.heads, plan.padded_heads, plan.kv_heads,
      list(plan.ranges), [c.kv_per_device for c in plan.chunks],
      " (kv heads replicated)" if plan.kv_replicated else "")
