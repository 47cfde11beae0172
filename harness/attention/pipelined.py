"""Ulysses self-attention with the q/k/v and output projections pipelined per head group.

Head-chunked Ulysses with whole projections leaves the first group's q/k/v all-to-alls and the last
group's output all-to-all with no compute to hide under. Here one shard_map over the
sequence-sharded activations projects each head group with its own columns of Wq/Wk/Wv (group g's
all-to-alls can run under group g+1's projection) and applies the output projection as a sum over
groups, out = sum_g o_g @ Wo[rows of g] + b (group g's output all-to-all can run under group g+1's
attention or group g-1's partial product).

Wan's RMSNorm on q and k spans all heads, which couples the groups. It stays exact: each group is
projected, multiplied by its channels of the norm weight and rotated (RoPE is linear, so it commutes
with a per-token scalar) before its all-to-all, while each token's sum of squares accumulates over
groups on the device that holds all its heads. Once every group is projected, one small all-gather
gives every device 1/rms of all tokens, applied to q and k after their all-to-all. Values and
gradients match the unpipelined path within float32 round-off, not bitwise: the sums of squares and
the output projection are summed in another order.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from harness import mesh_axes
from harness.attention import api
from harness.attention import heads as heads_lib
from harness.attention import layout
from harness.attention import padding
from harness.attention import ulysses

# wq, wk, wv, wo: Linear kernels [dim_in, dim_out]; bq, bk, bv, bo: biases [dim_out];
# norm_q, norm_k: RMSNorm scales [dim]. Heads are the major part of every projected width.
Weights = Mapping[str, jax.Array]
# rotate(x_BxSxHxD, angles_SxP) -> x_BxSxHxD: a rotation of channel pairs (RoPE), linear in x.
Rotate = Callable[[jax.Array, jax.Array], jax.Array]

WEIGHT_NAMES = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "norm_q", "norm_k")


def _dot(x_BxLxI: jax.Array, w_IxO: jax.Array, out_dtype=None) -> jax.Array:
  # The contraction nnx.Linear uses, so a group's columns match the whole product's.
  return lax.dot_general(x_BxLxI, w_IxO, (((x_BxLxI.ndim - 1,), (0,)), ((), ())),
                         preferred_element_type=out_dtype)


def _real_columns(chunk: heads_lib.ChunkPlan, heads: int, head_dim: int) -> slice:
  """Projection columns of the chunk's real (unpadded) heads."""
  return slice(chunk.start * head_dim, min(chunk.stop, heads) * head_dim)


def _to_heads(y_BxLxF: jax.Array, size: int, head_dim: int) -> jax.Array:
  """[B, L, real*D] -> [B, L, size, D] with zero heads appended (head padding)."""
  b, l, f = y_BxLxF.shape
  return padding.pad_axis(y_BxLxF.reshape(b, l, f // head_dim, head_dim), padding.HEAD_AXIS, size)


def _project_group(x_BxLxD, angles_LxP, w: Weights, chunk, *, heads: int, head_dim: int, dtype,
                   rotate: Rotate | None):
  """One group's q, k (norm weight and RoPE applied, 1/rms not yet), v and q's, k's sums of squares."""
  cols = _real_columns(chunk, heads, head_dim)
  size = chunk.stop - chunk.start
  x = x_BxLxD.astype(dtype)
  linear = lambda n: _dot(x, w["w" + n][:, cols].astype(dtype)) + w["b" + n][cols].astype(dtype)
  normed, ssq = [], []
  for n in ("q", "k"):
    y_BxLxF = linear(n)
    ssq.append(jnp.sum(jnp.square(y_BxLxF.astype(jnp.float32)), axis=-1))
    # The norm's output dtype promotes with its scale's, as nnx.RMSNorm's does (float32 scales
    # make q and k float32 in a bfloat16 model).
    scale_F = w["norm_" + n][cols]
    norm_dtype = jnp.result_type(y_BxLxF.dtype, scale_F.dtype)
    y_BxLxF = y_BxLxF.astype(norm_dtype) * scale_F.astype(norm_dtype)
    y_BxLxNxD = _to_heads(y_BxLxF, size, head_dim)
    normed.append(y_BxLxNxD if angles_LxP is None else rotate(y_BxLxNxD, angles_LxP))
  v_BxLxNxD = _to_heads(linear("v"), size, head_dim)
  return normed[0], normed[1], v_BxLxNxD, ssq[0], ssq[1]


def _send(q_BxLxNxD, k_BxLxNxD, v_BxLxNxD, axis: str, packed_qkv: bool):
  """One group's q, k, v to head-sharded, full-sequence blocks: three all-to-alls or one."""
  seq_to_heads = ulysses._seq_to_heads  # pylint: disable=protected-access
  if not packed_qkv:
    return tuple(seq_to_heads(t, axis, n) for t, n in zip((q_BxLxNxD, k_BxLxNxD, v_BxLxNxD), "qkv"))
  qkv = seq_to_heads(jnp.stack([q_BxLxNxD, k_BxLxNxD, v_BxLxNxD], axis=2), axis, "qkv")
  return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]


def _inverse_rms_all_tokens(ssq_q_BxL, ssq_k_BxL, dim: int, eps: float, axis: str):
  """1/rms of q and k for every token of the sequence: [B, S] each, from local sums of squares."""
  inv_BxLx2 = lax.rsqrt(jnp.stack([ssq_q_BxL, ssq_k_BxL], axis=-1) / dim + eps)
  with jax.named_scope("all_gather_rms"):
    inv_BxSx2 = lax.all_gather(inv_BxLx2, axis, axis=1, tiled=True)
  return inv_BxSx2[..., 0], inv_BxSx2[..., 1]


def pipelined_local(x_BxLxD, angles_LxP, w: Weights, kv_valid_len, *, plan: heads_lib.HeadPlan,
                    head_dim: int, eps: float, dtype, rotate: Rotate | None, axis: str,
                    attend: ulysses.AttendFn, packed_qkv: bool = False) -> jax.Array:
  """Per-device body: x [B, L, dim] sequence-sharded over `axis` -> attention output [B, L, dim]."""
  heads, dim = plan.heads, plan.heads * head_dim
  sent, ssq_q, ssq_k = [], 0.0, 0.0
  for i, chunk in enumerate(plan.chunks):
    with jax.named_scope(f"pipelined_chunk{i}"):
      with jax.named_scope("project"):
        q, k, v, sq, sk = _project_group(x_BxLxD, angles_LxP, w, chunk, heads=heads,
                                         head_dim=head_dim, dtype=dtype, rotate=rotate)
      ssq_q, ssq_k = ssq_q + sq, ssq_k + sk
      sent.append(_send(q, k, v, axis, packed_qkv))
  inv_q_BxS, inv_k_BxS = _inverse_rms_all_tokens(ssq_q, ssq_k, dim, eps, axis)
  total_BxLxD = None
  for i, (chunk, (q, k, v)) in enumerate(zip(plan.chunks, sent)):
    with jax.named_scope(f"pipelined_chunk{i}"):
      q = q * inv_q_BxS[:, :, None, None].astype(q.dtype)
      k = k * inv_k_BxS[:, :, None, None].astype(k.dtype)
      with jax.named_scope("attention"):
        out_BxSxnxD = attend(q, k, v, kv_valid_len)
      with jax.named_scope("all_to_all_out"):
        out_BxLxNxD = lax.all_to_all(out_BxSxnxD, axis, split_axis=1, concat_axis=2, tiled=True)
      with jax.named_scope("project_out"):
        rows = _real_columns(chunk, heads, head_dim)
        real_BxLxnxD = out_BxLxNxD[:, :, :(rows.stop - rows.start) // head_dim]
        b, l = real_BxLxnxD.shape[:2]
        part_BxLxD = _dot(real_BxLxnxD.reshape(b, l, -1).astype(dtype),
                          w["wo"][rows].astype(dtype), jnp.float32)
        # Else XLA's simplifier merges the groups' products into one dot after the last
        # all-to-all, and the last group's output all-to-all has nothing left to hide under.
        part_BxLxD = lax.optimization_barrier(part_BxLxD)
      total_BxLxD = part_BxLxD if total_BxLxD is None else total_BxLxD + part_BxLxD
  return (total_BxLxD + w["bo"].astype(jnp.float32)).astype(dtype)


def pipelined_self_attention(x_BxSxD: jax.Array, angles_SxP: jax.Array | None, weights: Weights,
                             *, num_heads: int, eps: float, dtype, rotate: Rotate | None,
                             mesh: Mesh, num_chunks: int, kernel: str, pad_heads: bool = False,
                             packed_qkv: bool = False, kernel_options=None) -> jax.Array:
  """o(attention(rope(norm_q(q(x))), rope(norm_k(k(x))), v(x))) with Ulysses over 'context'."""
  b, seq, dim = x_BxSxD.shape
  context = mesh.shape[mesh_axes.CONTEXT]
  plan = api.validate(heads=num_heads, kv_heads=num_heads, context=context, variant="ulysses",
                      num_chunks=num_chunks, kernel=kernel, packed_qkv=packed_qkv,
                      pad_heads=pad_heads)
  layout.check_batch(b, mesh)
  heads_lib.log_plan(plan, "ulysses (pipelined projections)", kernel)
  x_BxSxD = padding.pad_seq(x_BxSxD, context)
  padded = x_BxSxD.shape[1]
  valid = None if padded == seq else seq
  missing = [n for n in WEIGHT_NAMES if n not in weights]
  if missing:
    raise ValueError(f"pipelined projections need weights {WEIGHT_NAMES}; missing {missing}")
  weights = {n: weights[n] for n in WEIGHT_NAMES}
  local = functools.partial(
      pipelined_local, plan=plan, head_dim=dim // num_heads, eps=eps, dtype=jnp.dtype(dtype),
      rotate=rotate, axis=mesh_axes.CONTEXT,
      attend=ulysses.kernel_attend(kernel, kernel_options), packed_qkv=packed_qkv)
  x_spec = P(mesh_axes.BATCH_AXES, mesh_axes.CONTEXT, None)
  if angles_SxP is None:
    body = lambda x, w: local(x, None, w, valid)
    operands, specs = (x_BxSxD, weights), (x_spec, P())
  else:
    body = lambda x, a, w: local(x, a, w, valid)
    angles_SxP = padding.pad_axis(angles_SxP, 0, padded)
    operands, specs = (x_BxSxD, angles_SxP, weights), (x_spec, P(mesh_axes.CONTEXT, None), P())
  out = jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=x_spec,
                      check_vma=layout.check_vma(kernel))(*operands)
  return out[:, :seq]
