"""GSPMD head sharding: q, k, v constrained head-sharded over 'context'; XLA inserts the collectives.

This is how maxdiffusion's `flash` path runs under context parallelism: its logical axis rules map
self-attention heads to 'context', the kernel runs under a shard_map over full sequences, and the
partitioner reshards the sequence-sharded activations into it and back out (all-to-alls, or
gathers and slices, whichever XLA picks). Nothing here sends anything by hand.
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from harness import mesh as mesh_lib
from harness.attention import heads as heads_lib
from harness.attention import kernels
from harness.attention import layout
from harness.attention import padding
from harness.attention.types import AttentionPlan
from harness.attention.types import KernelOptions


def _kv_per_device(k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, heads: int, context: int):
  """k, v whose head blocks line up with q's: as they are when K splits over context, else per q head."""
  kv_heads = k_BxTxKxD.shape[2]
  if kv_heads % context == 0:
    return k_BxTxKxD, v_BxTxKxD
  # Fewer kv heads than devices (GQA/MQA): every q head gets its own copy, as q's shard needs it.
  repeat = lambda x: jnp.repeat(x, heads // kv_heads, axis=padding.HEAD_AXIS)
  return repeat(k_BxTxKxD), repeat(v_BxTxKxD)


def gspmd_heads_attention(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, *,
                          mesh: Mesh, plan: AttentionPlan, kv_valid_len,
                          kernel_options: KernelOptions | None) -> jax.Array:
  """Attention on head shards of the full sequence; heads already validated against mesh.context."""
  kernel = plan.kernel
  context = mesh.shape[mesh_lib.CONTEXT]
  heads = q_BxSxHxD.shape[2]
  padded_heads = heads_lib.padded_head_count(heads, context)
  k_BxTxKxD, v_BxTxKxD = _kv_per_device(k_BxTxKxD, v_BxTxKxD, heads, context)
  q_BxSxHxD = padding.pad_axis(q_BxSxHxD, padding.HEAD_AXIS, padded_heads)
  if k_BxTxKxD.shape[2] == heads:
    k_BxTxKxD, v_BxTxKxD = (padding.pad_axis(x, padding.HEAD_AXIS, padded_heads)
                            for x in (k_BxTxKxD, v_BxTxKxD))
  logging.info("attention gspmd_heads kernel=%s: %d heads (padded %d) over context=%d, kv %s",
               kernel, heads, padded_heads, context, k_BxTxKxD.shape)
  attend = kernels.attend_fn(kernel, kernel_options)
  out_BxSxHxD = layout.run_sharded(attend, mesh, None, None, q_BxSxHxD, k_BxTxKxD, v_BxTxKxD,
                                   kv_valid_len, kernel, head_axes=mesh_lib.CONTEXT)
  return out_BxSxHxD[:, :, :heads]
