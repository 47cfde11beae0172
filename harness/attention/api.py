"""The attention entry points: plan a configuration (planner.py), then run its variant."""
from __future__ import annotations

import jax
from jax.sharding import Mesh

from harness import mesh as mesh_lib
from harness.attention import layout
from harness.attention import planner
from harness.attention import variants
from harness.attention.types import AttentionPlan
from harness.attention.types import KernelOptions


def _check_shapes(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array) -> None:
  if q_BxSxHxD.ndim != 4 or k_BxTxKxD.ndim != 4 or k_BxTxKxD.shape != v_BxTxKxD.shape:
    raise ValueError(f"attention expects q [B,S,H,D] and k, v [B,T,K,D] of one shape; got "
                     f"{q_BxSxHxD.shape}, {k_BxTxKxD.shape}, {v_BxTxKxD.shape}")
  (b, _, _, d), (bk, _, _, dk) = q_BxSxHxD.shape, k_BxTxKxD.shape
  if b != bk or d != dk:
    raise ValueError(f"q {q_BxSxHxD.shape} and k {k_BxTxKxD.shape} need equal batch and head_dim")


def _check_plan_fits(plan: AttentionPlan, heads: int, kv_heads: int, context: int) -> None:
  if (plan.heads, plan.kv_heads, plan.context) != (heads, kv_heads, context):
    raise ValueError(f"the attention plan is for heads={plan.heads}, kv_heads={plan.kv_heads}, "
                     f"mesh.context={plan.context}; got heads={heads}, kv_heads={kv_heads}, "
                     f"mesh.context={context}")


def planned_attention(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, *,
                      mesh: Mesh, plan: AttentionPlan, kv_valid_len=None,
                      kernel_options: KernelOptions | None = None) -> jax.Array:
  """Runs the variant of a plan from `planner.plan_attention` on global arrays."""
  _check_shapes(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD)
  _check_plan_fits(plan, q_BxSxHxD.shape[2], k_BxTxKxD.shape[2], mesh.shape[mesh_lib.CONTEXT])
  spec = variants.VARIANT_TABLE[plan.variant]
  if spec.shards_batch:
    layout.check_batch(q_BxSxHxD.shape[0], mesh)
  return spec.fn(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, mesh=mesh, plan=plan,
                 kv_valid_len=kv_valid_len, kernel_options=kernel_options)


def context_parallel_attention(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array,
                               v_BxTxKxD: jax.Array, *, mesh: Mesh, variant: str = "ulysses",
                               num_chunks: int = 1, ulysses_degree: int | None = None,
                               kernel: str = "xla", packed_qkv: bool = False,
                               kv_valid_len=None, pad_heads: bool = False,
                               kernel_options: KernelOptions | None = None,
                               chunk_sizing: str = "larger_first") -> jax.Array:
  """Non-causal softmax attention of global arrays, context-parallel over mesh axis 'context'.

  Plans on every call; callers that trace repeatedly plan once and call `planned_attention`.
  """
  _check_shapes(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD)
  plan = planner.plan_attention(
      heads=q_BxSxHxD.shape[2], kv_heads=k_BxTxKxD.shape[2],
      context=mesh.shape[mesh_lib.CONTEXT], variant=variant, num_chunks=num_chunks,
      ulysses_degree=ulysses_degree, kernel=kernel, packed_qkv=packed_qkv, pad_heads=pad_heads,
      chunk_sizing=chunk_sizing)
  return planned_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, mesh=mesh, plan=plan,
                           kv_valid_len=kv_valid_len, kernel_options=kernel_options)
