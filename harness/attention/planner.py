"""The one place an attention configuration is checked: before tracing, once, into a plan.

`plan_attention` raises a one-line ValueError naming the gin binding and its valid choices for
anything the variant and kernel tables (variants.py, kernels.py) or the head rules (heads.py)
refuse, and otherwise returns the AttentionPlan that the variants run from.
"""
from __future__ import annotations

from harness.attention import heads as heads_lib
from harness.attention import kernels
from harness.attention import variants
from harness.attention.types import AttentionPlan
from harness.attention.types import HeadPlan
from harness.suggest import did_you_mean
from harness.errors import UserError


def _check_choice(binding: str, value, choices, why: str = "") -> None:
  if value not in choices:
    raise UserError(f"{binding}={value!r} is invalid{why}; valid choices: "
                    f"{', '.join(repr(c) for c in choices)}{did_you_mean(value, choices)}")


def _check_names(variant: str, kernel: str, chunk_sizing: str, platform: str | None) -> None:
  _check_choice("attention.variant", variant, variants.VARIANTS)
  _check_choice("attention.kernel", kernel, kernels.KERNELS)
  _check_choice("attention.chunk_sizing", chunk_sizing, heads_lib.CHUNK_SIZINGS)
  if platform is not None:
    _check_choice("attention.kernel", kernel, kernels.available_kernels(platform),
                  f" on {platform}")


def _check_ulysses_degree(variant: str, ulysses_degree, context: int) -> None:
  spec = variants.VARIANT_TABLE[variant]
  if not spec.takes_ulysses_degree:
    if ulysses_degree is not None:
      raise UserError(f"attention.ulysses_degree={ulysses_degree} needs attention.variant in "
                      f"{variants.ULYSSES_DEGREE_VARIANTS}; valid choice for {variant!r}: None")
  elif spec.head_split == variants.ULYSSES_DEGREE:
    _check_choice("attention.ulysses_degree", ulysses_degree, heads_lib.divisors(context),
                  f" for variant {variant!r} (a divisor of mesh.context={context})")
  else:
    _check_choice("attention.ulysses_degree", ulysses_degree, (None, context),
                  f" for variant {variant!r} (it uses mesh.context={context})")


def _check_variant_options(variant, num_chunks, ulysses_degree, kernel, packed_qkv, context):
  spec = variants.VARIANT_TABLE[variant]
  if not spec.chunked and num_chunks != 1:
    raise UserError(f"attention.num_chunks={num_chunks} needs attention.variant in "
                    f"{variants.CHUNKED_VARIANTS}; variant {variant!r} takes "
                    f"attention.num_chunks=1")
  if spec.kernels is not None:
    _check_choice("attention.kernel", kernel, spec.kernels,
                  f" for variant {variant!r} ({spec.kernels_reason})")
  if packed_qkv and spec.packed_qkv_error is not None:
    raise UserError(spec.packed_qkv_error)
  if spec.merges_lse:
    _check_choice("attention.kernel", kernel, kernels.LSE_KERNELS,
                  f" for variant {variant!r} (it merges log-sum-exps)")
  _check_ulysses_degree(variant, ulysses_degree, context)


def _head_plan(variant, heads, kv_heads, context, num_chunks, ulysses_degree, pad_heads,
               chunk_sizing) -> HeadPlan | None:
  """Checks the heads against the degree they split over; plans the groups of chunked variants."""
  spec = variants.VARIANT_TABLE[variant]
  if spec.head_split is None:
    return None
  degree = context if spec.head_split == variants.CONTEXT else ulysses_degree
  heads_lib.validate_heads(heads, kv_heads, degree, num_chunks, pad_heads, spec.head_split)
  if not spec.chunked:
    return None
  return heads_lib.plan_heads(heads, kv_heads, degree, num_chunks, chunk_sizing)


def plan_attention(*, heads: int, kv_heads: int, context: int, variant: str = "ulysses",
                   num_chunks: int = 1, ulysses_degree: int | None = None, kernel: str = "xla",
                   packed_qkv: bool = False, pad_heads: bool = False,
                   platform: str | None = None,
                   chunk_sizing: str = "larger_first") -> AttentionPlan:
  """Checks a configuration without tracing and returns its plan."""
  _check_names(variant, kernel, chunk_sizing, platform)
  if not isinstance(num_chunks, int) or num_chunks < 1:
    raise UserError(f"attention.num_chunks={num_chunks!r} must be a positive integer")
  _check_variant_options(variant, num_chunks, ulysses_degree, kernel, packed_qkv, context)
  if kv_heads < 1 or heads % kv_heads:
    raise UserError(f"kv_heads={kv_heads} must divide heads={heads} (GQA/MQA)")
  head_plan = _head_plan(variant, heads, kv_heads, context, num_chunks, ulysses_degree,
                         pad_heads, chunk_sizing)
  return AttentionPlan(variant=variant, kernel=kernel, heads=heads, kv_heads=kv_heads,
                       context=context, num_chunks=num_chunks, ulysses_degree=ulysses_degree,
                       packed_qkv=packed_qkv, pad_heads=pad_heads, chunk_sizing=chunk_sizing,
                       head_plan=head_plan)


def validate(*, heads: int, kv_heads: int, context: int, variant: str = "ulysses",
             num_chunks: int = 1, ulysses_degree: int | None = None, kernel: str = "xla",
             packed_qkv: bool = False, pad_heads: bool = False,
             platform: str | None = None,
             chunk_sizing: str = "larger_first") -> HeadPlan | None:
  """Checks a configuration without tracing; returns the Ulysses head plan (None for others)."""
  return plan_attention(heads=heads, kv_heads=kv_heads, context=context, variant=variant,
                        num_chunks=num_chunks, ulysses_degree=ulysses_degree, kernel=kernel,
                        packed_qkv=packed_qkv, pad_heads=pad_heads, platform=platform,
                        chunk_sizing=chunk_sizing).head_plan
