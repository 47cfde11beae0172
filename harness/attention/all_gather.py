"""All-gather context parallelism (MaxText's default): q stays sequence-sharded, K/V are gathered.

Each device attends its own query block to the whole sequence; the backward pass is autodiff's
transpose of the gather, a reduce-scatter of the K/V gradients.
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh

from harness import mesh as mesh_lib
from harness.attention import kernels
from harness.attention import layout
from harness.attention import padding
from harness.attention.types import AttentionPlan
from harness.attention.types import KernelOptions


def _gather_kv(k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, axis: str, packed: bool):
  """Full-sequence k, v from every device's block; packed sends both in one all-gather."""
  with jax.named_scope("all_gather_kv"):
    if packed:
      kv_BxTx2xKxD = lax.all_gather(jnp.stack([k_BxTxKxD, v_BxTxKxD], axis=2), axis, axis=1,
                                    tiled=True)
      return kv_BxTx2xKxD[:, :, 0], kv_BxTx2xKxD[:, :, 1]
    return (lax.all_gather(k_BxTxKxD, axis, axis=1, tiled=True),
            lax.all_gather(v_BxTxKxD, axis, axis=1, tiled=True))


def all_gather_attention(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, *,
                         mesh: Mesh, plan: AttentionPlan, kv_valid_len,
                         kernel_options: KernelOptions | None) -> jax.Array:
  """Attention of sequence-sharded q against K/V all-gathered over 'context'."""
  kernel, packed_qkv = plan.kernel, plan.packed_qkv
  context = mesh.shape[mesh_lib.CONTEXT]
  seq, seq_kv = q_BxSxHxD.shape[1], k_BxTxKxD.shape[1]
  q_BxSxHxD = padding.pad_seq(q_BxSxHxD, context)
  k_BxTxKxD, v_BxTxKxD = padding.pad_seq(k_BxTxKxD, context), padding.pad_seq(v_BxTxKxD, context)
  valid = padding.valid_len_after_padding(kv_valid_len, seq_kv, k_BxTxKxD.shape[1])
  logging.info("attention all_gather kernel=%s size=%d packed_kv=%s: q %s, kv %s", kernel, context,
               packed_qkv, q_BxSxHxD.shape, k_BxTxKxD.shape)

  attend = kernels.attend_fn(kernel, kernel_options)

  def local(q, k, v, valid_len):
    k_full, v_full = _gather_kv(k, v, mesh_lib.CONTEXT, packed_qkv)
    return attend(q, k_full, v_full, valid_len)

  out_BxSxHxD = layout.run_sharded(local, mesh, mesh_lib.CONTEXT, mesh_lib.CONTEXT, q_BxSxHxD,
                                   k_BxTxKxD, v_BxTxKxD, valid, kernel)
  return out_BxSxHxD[:, :seq]
