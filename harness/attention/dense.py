"""Reference attention: plain softmax over the global arrays, float32 logits and softmax."""
from __future__ import annotations

import logging
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from harness.attention.types import AttentionPlan
from harness.attention.types import KernelOptions


def dense_attention(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array,
                    kv_valid_len=None) -> jax.Array:
  """Textbook attention; GSPMD picks the layout. Rows with every key masked give 0."""
  heads, kv_heads, head_dim = q_BxSxHxD.shape[2], k_BxTxKxD.shape[2], q_BxSxHxD.shape[3]
  k_BxTxHxD = jnp.repeat(k_BxTxKxD, heads // kv_heads, axis=2).astype(jnp.float32)
  v_BxTxHxD = jnp.repeat(v_BxTxKxD, heads // kv_heads, axis=2).astype(jnp.float32)
  logits_BxHxSxT = jnp.einsum("bshd,bthd->bhst", q_BxSxHxD.astype(jnp.float32), k_BxTxHxD)
  logits_BxHxSxT = logits_BxHxSxT / math.sqrt(head_dim)
  if kv_valid_len is not None:
    valid_T = jnp.arange(k_BxTxKxD.shape[1]) < jnp.asarray(kv_valid_len, jnp.int32)
    logits_BxHxSxT = jnp.where(valid_T, logits_BxHxSxT, -jnp.inf)
    any_valid = jnp.asarray(kv_valid_len) > 0
    # Keep softmax finite on fully masked rows, whose output is zeroed below.
    logits_BxHxSxT = jnp.where(any_valid, logits_BxHxSxT, 0.0)
  probs_BxHxSxT = jax.nn.softmax(logits_BxHxSxT, axis=-1)
  out_BxSxHxD = jnp.einsum("bhst,bthd->bshd", probs_BxHxSxT, v_BxTxHxD)
  if kv_valid_len is not None:
    out_BxSxHxD = jnp.where(jnp.asarray(kv_valid_len) > 0, out_BxSxHxD, 0.0)
  return out_BxSxHxD.astype(q_BxSxHxD.dtype)


def dense_variant(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, *,
                  mesh: Mesh, plan: AttentionPlan, kv_valid_len,
                  kernel_options: KernelOptions | None) -> jax.Array:
  """`dense_attention` behind the variants' signature; the mesh and kernel play no part."""
  del mesh, plan, kernel_options
  logging.info("attention dense (reference): q %s, kv %s", q_BxSxHxD.shape, k_BxTxKxD.shape)
  return dense_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len)
