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
groups on the device that holds all its heads. Once every group is projected, one small exchange
gives every device 1/rms of all tokens (an all-gather written as an all-to-all: TPU keeps the
all-gather synchronous, and a synchronous collective ends the groups' async all-to-alls), applied
to q and k after their all-to-all. Values and
gradients match the unpipelined path within float32 round-off, not bitwise: the sums of squares and
the output projection are summed in another order.

Experimental and off by default (`attention.pipelined_projections`):
`python experiments/aot_pipelined_study.py` measures the hidden all-to-all time it buys and the compute it costs
(smaller matmuls, per-group copies of the weight columns).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from harness import mesh as mesh_lib
from harness.attention import collectives
from harness.attention import heads as heads_lib
from harness.attention import kernels
from harness.attention import layout
from harness.attention import padding
from harness.attention import planner
from harness.attention import ulysses
from harness.attention.types import AttendFn
from harness.attention.types import AttentionPlan
from harness.attention.types import ChunkPlan
from harness.attention.types import HeadPlan
from harness.attention.types import KernelOptions
from harness.attention.types import ProjectionWeights

# rotate(x_BxSxHxD, angles_SxP) -> x_BxSxHxD: a rotation of channel pairs (RoPE), linear in x.
Rotate = Callable[[jax.Array, jax.Array], jax.Array]


def _dot(x_BxLxI: jax.Array, w_IxO: jax.Array, out_dtype=None) -> jax.Array:
  # The contraction nnx.Linear uses, so a group's columns match the whole product's.
  return lax.dot_general(x_BxLxI, w_IxO, (((x_BxLxI.ndim - 1,), (0,)), ((), ())),
                         preferred_element_type=out_dtype)


def _real_columns(chunk: ChunkPlan, heads: int, head_dim: int) -> slice:
  """Projection columns of the chunk's real (unpadded) heads."""
  return slice(chunk.start * head_dim, min(chunk.stop, heads) * head_dim)


def _to_heads(y_BxLxF: jax.Array, size: int, head_dim: int) -> jax.Array:
  """[B, L, real*D] -> [B, L, size, D] with zero heads appended (head padding)."""
  b, l, f = y_BxLxF.shape
  return padding.pad_axis(y_BxLxF.reshape(b, l, f // head_dim, head_dim), padding.HEAD_AXIS, size)


def _project_group(x_BxLxD, angles_LxP, w: ProjectionWeights, chunk, *, heads: int,
                   head_dim: int, dtype, rotate: Rotate | None):
  """A group's q, k (norm weight and RoPE on, 1/rms not yet), v, and q's and k's sums of squares."""
  cols = _real_columns(chunk, heads, head_dim)
  size = chunk.stop - chunk.start
  x = x_BxLxD.astype(dtype)
  linear = lambda w_IxO, b_O: _dot(x, w_IxO[:, cols].astype(dtype)) + b_O[cols].astype(dtype)
  normed, ssq = [], []
  for w_IxO, b_O, norm_D in ((w.wq, w.bq, w.norm_q), (w.wk, w.bk, w.norm_k)):
    y_BxLxF = linear(w_IxO, b_O)
    ssq.append(jnp.sum(jnp.square(y_BxLxF.astype(jnp.float32)), axis=-1))
    # q and k leave the norm in the model's compute dtype, as the model's RMSNorm does.
    y_BxLxF = y_BxLxF * norm_D[cols].astype(dtype)
    y_BxLxNxD = _to_heads(y_BxLxF, size, head_dim)
    normed.append(y_BxLxNxD if angles_LxP is None else rotate(y_BxLxNxD, angles_LxP))
  v_BxLxNxD = _to_heads(linear(w.wv, w.bv), size, head_dim)
  return normed[0], normed[1], v_BxLxNxD, ssq[0], ssq[1]


def _send(q_BxLxNxD, k_BxLxNxD, v_BxLxNxD, axis: str, packed_qkv: bool):
  """One group's q, k, v to head-sharded, full-sequence n x B x S x D blocks: three all-to-alls
  or one. Heads-major sends with the batch kept out of the minor tile, as ulysses.py's exchange."""
  qkv_NxBxLxD = [collectives.heads_major(t) for t in (q_BxLxNxD, k_BxLxNxD, v_BxLxNxD)]
  if not packed_qkv:
    return tuple(collectives.seq_to_heads(t, axis, n) for t, n in zip(qkv_NxBxLxD, "qkv"))
  qkv = collectives.seq_to_heads(jnp.stack(qkv_NxBxLxD, axis=1), axis, "qkv")
  return qkv[:, 0], qkv[:, 1], qkv[:, 2]


def _inverse_rms_all_tokens(ssq_q_BxL, ssq_k_BxL, dim: int, eps: float, axis: str):
  """1/rms of q and k for every token of the sequence: [B, S] each, from local sums of squares."""
  inv_BxLx2 = lax.rsqrt(jnp.stack([ssq_q_BxL, ssq_k_BxL], axis=-1) / dim + eps)
  # An all-gather written as an all-to-all of copies: TPU compiles this all-gather synchronously,
  # and a synchronous collective ends every async all-to-all in flight (the groups' sends).
  with jax.named_scope("all_to_all_rms"):
    b, l, _ = inv_BxLx2.shape
    copies_BxLxCx2 = jnp.broadcast_to(inv_BxLx2[:, :, None], (b, l, lax.axis_size(axis), 2))
    inv_BxSx1x2 = lax.all_to_all(copies_BxLxCx2, axis, split_axis=2, concat_axis=1, tiled=True)
  return inv_BxSx1x2[:, :, 0, 0], inv_BxSx1x2[:, :, 0, 1]


def pipelined_local(x_BxLxD, angles_LxP, w: ProjectionWeights, kv_valid_len, *, plan: HeadPlan,
                    head_dim: int, eps: float, dtype, rotate: Rotate | None, axis: str,
                    attend: AttendFn, packed_qkv: bool = False) -> jax.Array:
  """Per-device body: x [B, L, dim] sequence-sharded over `axis` -> attention output [B, L, dim].

  Program order pairs each all-to-all with compute it does not depend on: group g is sent while
  group g+1 is projected (the last group while group 0 attends), and group g's output returns
  while group g+1 attends and group g-1's output is projected. XLA's scheduler decides; XLA
  scheduling-group annotations on these pairs changed nothing in the AOT study, so none are set.
  """
  n, heads, dim = len(plan.chunks), plan.heads, plan.heads * head_dim
  chunk_scope = lambda i: jax.named_scope(f"pipelined_chunk{i}")

  def project(i):
    with chunk_scope(i), jax.named_scope("project"):
      return _project_group(x_BxLxD, angles_LxP, w, plan.chunks[i], heads=heads,
                            head_dim=head_dim, dtype=dtype, rotate=rotate)

  def attention(i):
    q_nxBxSxD, k_nxBxSxD, v_nxBxSxD = sent[i]
    with chunk_scope(i), jax.named_scope("attention"):
      q_nxBxSxD = q_nxBxSxD * inv_q_BxS[None, :, :, None].astype(q_nxBxSxD.dtype)
      k_nxBxSxD = k_nxBxSxD * inv_k_BxS[None, :, :, None].astype(k_nxBxSxD.dtype)
      return ulysses.attend_folded(
          attend, q_nxBxSxD, k_nxBxSxD, v_nxBxSxD, kv_valid_len)

  def project_out(i):
    rows = _real_columns(plan.chunks[i], heads, head_dim)
    with chunk_scope(i), jax.named_scope("project_out"):
      real_BxLxnxD = back[i][:, :, :(rows.stop - rows.start) // head_dim]
      b, l = real_BxLxnxD.shape[:2]
      part_BxLxD = _dot(real_BxLxnxD.reshape(b, l, -1).astype(dtype),
                        w.wo[rows].astype(dtype), jnp.float32)
      # Else XLA's simplifier merges the groups' products into one dot after the last
      # all-to-all, and the last group's output all-to-all has nothing left to hide under.
      parts.append(part_BxLxD if not parts else lax.optimization_barrier(parts.pop()) + part_BxLxD)

  projected, sent, back, parts = [project(0)], [], [], []
  for i in range(n):
    with chunk_scope(i):
      sent.append(_send(*projected[i][:3], axis, packed_qkv))
    if i + 1 < n:
      projected.append(project(i + 1))
  ssq_q = functools.reduce(lambda a, b: a + b, [p[3] for p in projected])
  ssq_k = functools.reduce(lambda a, b: a + b, [p[4] for p in projected])
  inv_q_BxS, inv_k_BxS = _inverse_rms_all_tokens(ssq_q, ssq_k, dim, eps, axis)
  for i in range(n):
    out_nxBxSxD = attention(i)
    if i >= 2:
      project_out(i - 2)
    with chunk_scope(i):
      out_NxBxLxD = collectives.heads_to_seq(out_nxBxSxD, axis)
      back.append(out_NxBxLxD.transpose(1, 2, 0, 3))
  for i in range(max(0, n - 2), n):
    project_out(i)
  total_BxLxD = parts[0]
  return (total_BxLxD + w.bo.astype(jnp.float32)).astype(dtype)


def _check_plan_fits(plan: AttentionPlan, heads: int, context: int) -> None:
  if (plan.variant, plan.heads, plan.kv_heads, plan.context) != ("ulysses", heads, heads, context):
    raise ValueError(f"pipelined projections need a plan for variant 'ulysses' with heads="
                     f"kv_heads={heads} and mesh.context={context}; got variant "
                     f"{plan.variant!r}, heads={plan.heads}, kv_heads={plan.kv_heads}, "
                     f"mesh.context={plan.context}")


def planned_pipelined_attention(x_BxSxD: jax.Array, angles_SxP: jax.Array | None,
                                weights: ProjectionWeights, *, num_heads: int, eps: float, dtype,
                                rotate: Rotate | None, mesh: Mesh, plan: AttentionPlan,
                                kernel_options: KernelOptions | None = None) -> jax.Array:
  """`pipelined_self_attention` with a plan made once by `planner.plan_attention`."""
  b, seq, dim = x_BxSxD.shape
  context = mesh.shape[mesh_lib.CONTEXT]
  _check_plan_fits(plan, num_heads, context)
  layout.check_batch(b, mesh)
  kernel, head_plan = plan.kernel, plan.head_plan
  heads_lib.log_plan(head_plan, "ulysses (pipelined projections)", kernel)
  x_BxSxD = padding.pad_seq(x_BxSxD, context)
  padded = x_BxSxD.shape[1]
  valid = None if padded == seq else seq
  local = functools.partial(
      pipelined_local, plan=head_plan, head_dim=dim // num_heads, eps=eps, dtype=jnp.dtype(dtype),
      rotate=rotate, axis=mesh_lib.CONTEXT,
      attend=kernels.attend_fn(kernel, kernel_options), packed_qkv=plan.packed_qkv)
  x_spec = P(mesh_lib.BATCH_AXES, mesh_lib.CONTEXT, None)
  if angles_SxP is None:
    body = lambda x, w: local(x, None, w, valid)
    operands, specs = (x_BxSxD, weights), (x_spec, P())
  else:
    body = lambda x, a, w: local(x, a, w, valid)
    angles_SxP = padding.pad_axis(angles_SxP, 0, padded)
    operands, specs = (x_BxSxD, angles_SxP, weights), (x_spec, P(mesh_lib.CONTEXT, None), P())
  out = jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=x_spec,
                      check_vma=layout.check_vma(kernel))(*operands)
  return out[:, :seq]


def pipelined_self_attention(x_BxSxD: jax.Array, angles_SxP: jax.Array | None,
                             weights: ProjectionWeights, *, num_heads: int, eps: float, dtype,
                             rotate: Rotate | None, mesh: Mesh, num_chunks: int, kernel: str,
                             pad_heads: bool = False, packed_qkv: bool = False,
                             kernel_options: KernelOptions | None = None,
                             chunk_sizing: str = "larger_first") -> jax.Array:
  """o(attention(rope(norm_q(q(x))), rope(norm_k(k(x))), v(x))) with Ulysses over 'context'."""
  plan = planner.plan_attention(
      heads=num_heads, kv_heads=num_heads, context=mesh.shape[mesh_lib.CONTEXT],
      variant="ulysses", num_chunks=num_chunks, kernel=kernel, packed_qkv=packed_qkv,
      pad_heads=pad_heads, chunk_sizing=chunk_sizing)
  return planned_pipelined_attention(x_BxSxD, angles_SxP, weights, num_heads=num_heads, eps=eps,
                                     dtype=dtype, rotate=rotate, mesh=mesh, plan=plan,
                                     kernel_options=kernel_options)
