"""Ring attention: K/V blocks travel around a mesh axis with ppermute; log-sum-exp merges.

The backward pass is JAX's autodiff of the unrolled ring (transposed ppermutes run the other way).
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


def merge(out_a_BxSxHxD, lse_a_BxHxS, out_b_BxSxHxD, lse_b_BxHxS):
  """Combines two partial softmax results over disjoint keys; -inf lse means no keys (weight 0)."""
  peak_BxHxS = lax.stop_gradient(jnp.maximum(lse_a_BxHxS, lse_b_BxHxS))
  # Rows without any valid key so far keep a finite shift so that exp sees no inf - inf.
  peak_BxHxS = jnp.where(jnp.isfinite(peak_BxHxS), peak_BxHxS, 0.0)
  w_a_BxHxS = jnp.exp(lse_a_BxHxS - peak_BxHxS)
  w_b_BxHxS = jnp.exp(lse_b_BxHxS - peak_BxHxS)
  total_BxHxS = w_a_BxHxS + w_b_BxHxS
  nonempty_BxHxS = total_BxHxS > 0
  safe_total_BxHxS = jnp.where(nonempty_BxHxS, total_BxHxS, 1.0)
  lse_BxHxS = jnp.where(nonempty_BxHxS, peak_BxHxS + jnp.log(safe_total_BxHxS), -jnp.inf)
  to_BxSxHx1 = lambda w_BxHxS: jnp.swapaxes(w_BxHxS / safe_total_BxHxS, 1, 2)[..., None]
  out_BxSxHxD = (out_a_BxSxHxD.astype(jnp.float32) * to_BxSxHx1(w_a_BxHxS)
                 + out_b_BxSxHxD.astype(jnp.float32) * to_BxSxHx1(w_b_BxHxS))
  return out_BxSxHxD, lse_BxHxS


def _block_valid_len(kv_valid_len, source, block: int):
  """Key mask of the block that started on device `source`, in that block's own positions."""
  if kv_valid_len is None:
    return None
  return jnp.clip(jnp.asarray(kv_valid_len, jnp.int32) - source * block, 0, block)


def _shift(kv: tuple[jax.Array, ...], axis: str, size: int, packed: bool):
  perm = [(i, (i + 1) % size) for i in range(size)]
  with jax.named_scope("ppermute_kv"):
    if packed:
      return tuple(lax.ppermute(jnp.stack(kv), axis, perm))
    return tuple(lax.ppermute(x, axis, perm) for x in kv)


def ring_local(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, kv_valid_len,
               *, axis: str, size: int, kernel: str, packed_kv: bool,
               kernel_options: KernelOptions | None = None) -> jax.Array:
  """Per-device ring over `axis` of `size`; the local kv block is block axis_index of the ring."""
  index = lax.axis_index(axis)
  block = k_BxTxKxD.shape[1]
  kv = (k_BxTxKxD, v_BxTxKxD)
  out_BxSxHxD = lse_BxHxS = None
  for step in range(size):
    with jax.named_scope(f"ring_step{step}"):
      # The next block is sent before this one is used so that the transfer can hide under it.
      incoming = _shift(kv, axis, size, packed_kv) if step + 1 < size else None
      valid = _block_valid_len(kv_valid_len, (index - step) % size, block)
      part_out, part_lse = kernels.local_attention_lse(q_BxSxHxD, kv[0], kv[1], kernel=kernel,
                                                       kv_valid_len=valid, options=kernel_options)
      if out_BxSxHxD is None:
        out_BxSxHxD, lse_BxHxS = part_out.astype(jnp.float32), part_lse
      else:
        out_BxSxHxD, lse_BxHxS = merge(out_BxSxHxD, lse_BxHxS, part_out, part_lse)
      kv = incoming
  return out_BxSxHxD.astype(q_BxSxHxD.dtype)


def collective_permutes(size: int, packed_kv: bool) -> int:
  """Collective-permutes in a forward pass: one (packed k,v) or two per step after the first."""
  return (size - 1) * (1 if packed_kv else 2)


def ring_attention(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, *,
                   mesh: Mesh, plan: AttentionPlan, kv_valid_len,
                   kernel_options: KernelOptions | None) -> jax.Array:
  """Ring attention over 'context' on global arrays."""
  size = mesh.shape[mesh_lib.CONTEXT]
  logging.info("attention ring kernel=%s size=%d packed_kv=%s: q %s, kv %s", plan.kernel, size,
               plan.packed_qkv, q_BxSxHxD.shape, k_BxTxKxD.shape)
  seq = q_BxSxHxD.shape[1]
  q, k, v, valid = padding.pad_inputs(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, size,
                                      q_BxSxHxD.shape[2])
  local = lambda q, k, v, valid: ring_local(q, k, v, valid, axis=mesh_lib.CONTEXT, size=size,
                                            kernel=plan.kernel, packed_kv=plan.packed_qkv,
                                            kernel_options=kernel_options)
  out = layout.run_sharded(local, mesh, mesh_lib.CONTEXT, mesh_lib.CONTEXT, q, k, v, valid,
                           plan.kernel)
  return out[:, :seq]
