"""The one attention entry point: validates the configuration and dispatches to a variant."""
from __future__ import annotations

import logging

import jax
from jax.sharding import Mesh

from harness import mesh_axes
from harness.attention import all_gather
from harness.attention import dense
from harness.attention import gspmd_heads
from harness.attention import heads as heads_lib
from harness.attention import kernels
from harness.attention import layout
from harness.attention import ring
from harness.attention import ulysses
from harness.attention import ulysses_ring
from harness.suggest import did_you_mean

VARIANTS = ("dense", "ulysses", "ring", "ulysses_ring", "gspmd_heads", "all_gather")
RING_VARIANTS = ("ring", "ulysses_ring")
CHUNKED_VARIANTS = ("ulysses", "ulysses_ring")


def _check_choice(binding: str, value, choices, why: str = "") -> None:
  if value not in choices:
    raise ValueError(f"{binding}={value!r} is invalid{why}; valid choices: "
                     f"{', '.join(repr(c) for c in choices)}{did_you_mean(value, choices)}")


def _check_variant_options(variant, num_chunks, ulysses_degree, kernel, packed_qkv, context):
  if variant not in CHUNKED_VARIANTS and num_chunks != 1:
    raise ValueError(f"attention.num_chunks={num_chunks} needs attention.variant in "
                     f"{CHUNKED_VARIANTS}; variant {variant!r} takes attention.num_chunks=1")
  if variant == "dense":
    _check_choice("attention.kernel", kernel, ("xla",),
                  " for variant 'dense' (the plain reference)")
    if packed_qkv:
      raise ValueError("attention.packed_qkv=True needs attention.variant in "
                       "('ulysses', 'ring', 'ulysses_ring'); variant 'dense' sends nothing")
  if variant == "gspmd_heads" and packed_qkv:
    raise ValueError("attention.packed_qkv=True needs attention.variant in ('ulysses', 'ring', "
                     "'ulysses_ring', 'all_gather'); variant 'gspmd_heads' leaves sends to XLA")
  if variant in RING_VARIANTS:
    _check_choice("attention.kernel", kernel, kernels.LSE_KERNELS,
                  f" for variant {variant!r} (it merges log-sum-exps)")
  if variant == "ulysses_ring":
    _check_choice("attention.ulysses_degree", ulysses_degree, heads_lib.divisors(context),
                  f" for variant 'ulysses_ring' (a divisor of mesh.context={context})")
  elif variant == "ulysses":
    _check_choice("attention.ulysses_degree", ulysses_degree, (None, context),
                  f" for variant 'ulysses' (it uses mesh.context={context})")
  elif ulysses_degree is not None:
    raise ValueError(f"attention.ulysses_degree={ulysses_degree} needs attention.variant in "
                     f"('ulysses', 'ulysses_ring'); valid choice for {variant!r}: None")


def validate(*, heads: int, kv_heads: int, context: int, variant: str = "ulysses",
             num_chunks: int = 1, ulysses_degree: int | None = None, kernel: str = "xla",
             packed_qkv: bool = False, pad_heads: bool = False,
             platform: str | None = None,
             chunk_sizing: str = "larger_first") -> heads_lib.HeadPlan | None:
  """Checks a configuration without tracing; returns the Ulysses head plan (None for others)."""
  _check_choice("attention.variant", variant, VARIANTS)
  _check_choice("attention.kernel", kernel, kernels.KERNELS)
  _check_choice("attention.chunk_sizing", chunk_sizing, heads_lib.CHUNK_SIZINGS)
  if platform is not None:
    _check_choice("attention.kernel", kernel, kernels.available_kernels(platform),
                  f" on {platform}")
  if not isinstance(num_chunks, int) or num_chunks < 1:
    raise ValueError(f"attention.num_chunks={num_chunks!r} must be a positive integer")
  _check_variant_options(variant, num_chunks, ulysses_degree, kernel, packed_qkv, context)
  if kv_heads < 1 or heads % kv_heads:
    raise ValueError(f"kv_heads={kv_heads} must divide heads={heads} (GQA/MQA)")
  if variant == "gspmd_heads":
    heads_lib.validate_heads(heads, kv_heads, context, 1, pad_heads, "mesh.context")
  if variant not in CHUNKED_VARIANTS:
    return None
  degree, binding = ((context, "mesh.context") if variant == "ulysses"
                     else (ulysses_degree, "attention.ulysses_degree"))
  heads_lib.validate_heads(heads, kv_heads, degree, num_chunks, pad_heads, binding)
  return heads_lib.plan_heads(heads, kv_heads, degree, num_chunks, chunk_sizing)


def _check_shapes(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array) -> None:
  if q_BxSxHxD.ndim != 4 or k_BxTxKxD.ndim != 4 or k_BxTxKxD.shape != v_BxTxKxD.shape:
    raise ValueError(f"attention expects q [B,S,H,D] and k, v [B,T,K,D] of one shape; got "
                     f"{q_BxSxHxD.shape}, {k_BxTxKxD.shape}, {v_BxTxKxD.shape}")
  (b, _, _, d), (bk, _, _, dk) = q_BxSxHxD.shape, k_BxTxKxD.shape
  if b != bk or d != dk:
    raise ValueError(f"q {q_BxSxHxD.shape} and k {k_BxTxKxD.shape} need equal batch and head_dim")


def context_parallel_attention(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array,
                               v_BxTxKxD: jax.Array, *, mesh: Mesh, variant: str = "ulysses",
                               num_chunks: int = 1, ulysses_degree: int | None = None,
                               kernel: str = "xla", packed_qkv: bool = False,
                               kv_valid_len=None, pad_heads: bool = False,
                               kernel_options=None,
                               chunk_sizing: str = "larger_first") -> jax.Array:
  """Non-causal softmax attention of global arrays, context-parallel over mesh axis 'context'."""
  _check_shapes(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD)
  context = mesh.shape[mesh_axes.CONTEXT]
  validate(heads=q_BxSxHxD.shape[2], kv_heads=k_BxTxKxD.shape[2], context=context,
           variant=variant, num_chunks=num_chunks, ulysses_degree=ulysses_degree, kernel=kernel,
           packed_qkv=packed_qkv, pad_heads=pad_heads, chunk_sizing=chunk_sizing)
  common = dict(kernel=kernel, packed_qkv=packed_qkv, kv_valid_len=kv_valid_len,
                kernel_options=kernel_options)
  if variant == "dense":
    logging.info("attention dense (reference): q %s, kv %s", q_BxSxHxD.shape, k_BxTxKxD.shape)
    return dense.dense_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len)
  layout.check_batch(q_BxSxHxD.shape[0], mesh)
  if variant == "ulysses":
    return ulysses.ulysses_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, mesh=mesh,
                                     num_chunks=num_chunks, chunk_sizing=chunk_sizing, **common)
  if variant == "gspmd_heads":
    return gspmd_heads.gspmd_heads_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, mesh=mesh,
                                             kernel=kernel, kv_valid_len=kv_valid_len,
                                             kernel_options=kernel_options)
  if variant == "all_gather":
    return all_gather.all_gather_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, mesh=mesh, **common)
  if variant == "ring":
    logging.info("attention ring kernel=%s size=%d packed_kv=%s: q %s, kv %s", kernel, context,
                 packed_qkv, q_BxSxHxD.shape, k_BxTxKxD.shape)
    return ring.ring_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, mesh=mesh, **common)
  return ulysses_ring.ulysses_ring_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, mesh=mesh,
                                             ulysses_degree=ulysses_degree,
                                             num_chunks=num_chunks, chunk_sizing=chunk_sizing,
                                             **common)
