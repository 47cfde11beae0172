"""The table of attention variants: each one's function (one signature) and what the planner checks.

Every list of variant names (the gin choices, the chunked ones, the ones that merge log-sum-exps,
the ones that take attention.ulysses_degree) is derived from this table.
"""
from __future__ import annotations

import dataclasses

from harness.attention import all_gather
from harness.attention import dense
from harness.attention import gspmd_heads
from harness.attention import ring
from harness.attention import ulysses
from harness.attention import ulysses_ring
from harness.attention.types import VariantFn

CONTEXT = "mesh.context"
ULYSSES_DEGREE = "attention.ulysses_degree"


@dataclasses.dataclass(frozen=True)
class Variant:
  """A variant's function and its properties."""
  fn: VariantFn
  # Splits heads into attention.num_chunks groups (head-chunked Ulysses); others take 1 chunk.
  chunked: bool = False
  # Merges partial results by their log-sum-exps: needs a kernel with an lse form.
  merges_lse: bool = False
  # Takes attention.ulysses_degree (ulysses: None or mesh.context; else a divisor of it).
  takes_ulysses_degree: bool = False
  # The binding whose degree the heads are split over (CONTEXT, ULYSSES_DEGREE), or None.
  head_split: str | None = None
  # The kernels it runs (None: any) and why, for the one-line error.
  kernels: tuple[str, ...] | None = None
  kernels_reason: str = ""
  # The one-line error for attention.packed_qkv=True, or None when the variant packs its sends.
  packed_qkv_error: str | None = None
  # Whether the batch is sharded over ('data', 'fsdp') (it must divide their product).
  shards_batch: bool = True


VARIANT_TABLE: dict[str, Variant] = {
    "dense": Variant(
        dense.dense_variant, kernels=("xla",), kernels_reason="the plain reference",
        packed_qkv_error=("attention.packed_qkv=True needs attention.variant in ('ulysses', "
                          "'ring', 'ulysses_ring'); variant 'dense' sends nothing"),
        shards_batch=False),
    "ulysses": Variant(ulysses.ulysses_attention, chunked=True, takes_ulysses_degree=True,
                       head_split=CONTEXT),
    "ring": Variant(ring.ring_attention, merges_lse=True),
    "ulysses_ring": Variant(ulysses_ring.ulysses_ring_attention, chunked=True, merges_lse=True,
                            takes_ulysses_degree=True, head_split=ULYSSES_DEGREE),
    "gspmd_heads": Variant(
        gspmd_heads.gspmd_heads_attention, head_split=CONTEXT,
        packed_qkv_error=("attention.packed_qkv=True needs attention.variant in ('ulysses', "
                          "'ring', 'ulysses_ring', 'all_gather'); variant 'gspmd_heads' leaves "
                          "sends to XLA")),
    "all_gather": Variant(all_gather.all_gather_attention),
}

VARIANTS = tuple(VARIANT_TABLE)
CHUNKED_VARIANTS = tuple(n for n, v in VARIANT_TABLE.items() if v.chunked)
LSE_VARIANTS = tuple(n for n, v in VARIANT_TABLE.items() if v.merges_lse)
ULYSSES_DEGREE_VARIANTS = tuple(n for n, v in VARIANT_TABLE.items() if v.takes_ulysses_degree)
