"""Ulysses attention: all-to-all from sequence-sharded to head-sharded, single-shot or head-chunked.

With C > 1 the heads travel in C groups inside one shard_map. The program issues group i+1's
all-to-alls before group i's attention so that a latency-hiding scheduler may run them concurrently.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from harness import mesh as mesh_lib
from harness.attention import collectives
from harness.attention import heads as heads_lib
from harness.attention import kernels
from harness.attention import layout
from harness.attention import padding
from harness.attention.types import AttendFn
from harness.attention.types import AttentionPlan
from harness.attention.types import ChunkPlan
from harness.attention.types import HeadPlan
from harness.attention.types import KernelOptions


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _repeat_heads(x_BxSxKxD: jax.Array, group: int) -> jax.Array:
  """Repeats each kv head `group` times: one kv head per q head."""
  return jnp.repeat(x_BxSxKxD, group, axis=2)


def _repeat_heads_fwd(x_BxSxKxD, group):
  return _repeat_heads(x_BxSxKxD, group), None


def _repeat_heads_bwd(group, _, ct_BxSxHxD):
  # An explicit left-to-right sum: XLA may fuse a reduce with the chunks' concatenation and pick
  # a summation order by shape, which would make the bits depend on the chunk count.
  b, s, h, d = ct_BxSxHxD.shape
  ct_BxSxKxGxD = ct_BxSxHxD.reshape(b, s, h // group, group, d)
  total_BxSxKxD = ct_BxSxKxGxD[:, :, :, 0]
  for i in range(1, group):
    total_BxSxKxD = total_BxSxKxD + ct_BxSxKxGxD[:, :, :, i]
  return (total_BxSxKxD,)


_repeat_heads.defvjp(_repeat_heads_fwd, _repeat_heads_bwd)


def packed_mode(chunk: ChunkPlan) -> str:
  """'qkv' when q and kv slabs have one shape (one all-to-all), else 'kv' (q sent apart)."""
  return "qkv" if chunk.group == 1 else "kv"


def all_to_alls_per_chunk(plan: HeadPlan, packed_qkv: bool) -> tuple[int, ...]:
  """All-to-alls a forward pass issues per chunk: 4, or 2 (packed q,k,v) / 3 (packed k,v)."""
  if not packed_qkv:
    return tuple(4 for _ in plan.chunks)
  return tuple(2 if packed_mode(c) == "qkv" else 3 for c in plan.chunks)


def _slices(chunk: ChunkPlan, *xs_HxBxSxD: jax.Array) -> tuple[jax.Array, ...]:
  """One head group of each array: a contiguous block of the major axis."""
  return tuple(x[chunk.start:chunk.stop] for x in xs_HxBxSxD)


def _send(q_c, k_c, v_c, group: int, axis: str, packed_qkv: bool):
  """All-to-alls one head group's q, k, v (n x B x S/D x D each) to full-sequence blocks."""
  if group > 1 and not packed_qkv:
    return (collectives.seq_to_heads(q_c, axis, "q"), collectives.send_grouped(k_c, axis, group),
            collectives.send_grouped(v_c, axis, group))
  if group > 1:
    kv = collectives.send_grouped(jnp.stack([k_c, v_c], axis=1), axis, group)
    return collectives.seq_to_heads(q_c, axis, "q"), kv[:, 0], kv[:, 1]
  if not packed_qkv:
    return (collectives.seq_to_heads(q_c, axis, "q"), collectives.seq_to_heads(k_c, axis, "k"),
            collectives.seq_to_heads(v_c, axis, "v"))
  qkv = collectives.seq_to_heads(jnp.stack([q_c, k_c, v_c], axis=1), axis, "qkv")
  return qkv[:, 0], qkv[:, 1], qkv[:, 2]


def _per_q_head(x_BxSxKxD: jax.Array, plan: HeadPlan) -> jax.Array:
  """One kv head per (padded) q head: a local copy for GQA whose transpose sums each group once."""
  if plan.kv_heads < plan.heads:
    x_BxSxKxD = _repeat_heads(x_BxSxKxD, plan.heads // plan.kv_heads)
  return padding.pad_axis(x_BxSxKxD, padding.HEAD_AXIS, plan.padded_heads)


def attend_folded(attend: AttendFn, q_hxBxSxD, k_hxBxSxD, v_hxBxSxD, kv_valid_len):
  """The kernel on the local batch folded into heads (batch 1, h*B heads); heads are independent."""
  h, b, s, d = q_hxBxSxD.shape
  # Kernels take B x S x H x D; splash turns it straight back into heads-major, a no-op here.
  fold = lambda x: x.reshape(h * b, x.shape[2], d).transpose(1, 0, 2)[None]
  out_1xSxNxD = attend(fold(q_hxBxSxD), fold(k_hxBxSxD), fold(v_hxBxSxD), kv_valid_len)
  return out_1xSxNxD[0].transpose(1, 0, 2).reshape(h, b, s, d)


def ulysses_local(q_BxSxHxD: jax.Array, k_BxSxKxD: jax.Array, v_BxSxKxD: jax.Array,
                  kv_valid_len, *, plan: HeadPlan, axis: str, attend: AttendFn,
                  packed_qkv: bool) -> jax.Array:
  """Per-device Ulysses over mesh axis `axis`; q heads already padded to plan.padded_heads."""
  # Heads-major once: XLA fuses this transpose with each group's slice (one copy a group) where
  # slicing first made it copy the whole and then slice it (tests/test_attention_layout.py).
  qkv_HxBxSxD = tuple(collectives.heads_major(x) for x in (q_BxSxHxD, _per_q_head(k_BxSxKxD, plan),
                                                _per_q_head(v_BxSxKxD, plan)))
  chunks = plan.chunks
  with jax.named_scope("ulysses_chunk0"):
    incoming = _send(*_slices(chunks[0], *qkv_HxBxSxD), chunks[0].group, axis, packed_qkv)
  outs = []
  for i in range(len(chunks)):
    current = incoming
    if i + 1 < len(chunks):
      with jax.named_scope(f"ulysses_chunk{i + 1}"):
        incoming = _send(*_slices(chunks[i + 1], *qkv_HxBxSxD), chunks[i + 1].group, axis,
                         packed_qkv)
    with jax.named_scope(f"ulysses_chunk{i}"):
      with jax.named_scope("attention"):
        out_hxBxSxD = attend_folded(attend, *current, kv_valid_len)
      outs.append(collectives.heads_to_seq(out_hxBxSxD, axis))
  out_HxBxSxD = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=0)
  return out_HxBxSxD[:plan.heads].transpose(1, 2, 0, 3)


def ulysses_attention(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, *,
                      mesh: Mesh, plan: AttentionPlan, kv_valid_len,
                      kernel_options: KernelOptions | None) -> jax.Array:
  """Ulysses over 'context' on global arrays, heads grouped as plan.head_plan says."""
  degree = mesh.shape[mesh_lib.CONTEXT]
  head_plan = plan.head_plan
  heads_lib.log_plan(head_plan, "ulysses", plan.kernel)
  seq = q_BxSxHxD.shape[1]
  q, k, v, valid = padding.pad_inputs(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, degree,
                                      head_plan.padded_heads)
  local = lambda q, k, v, valid: ulysses_local(
      q, k, v, valid, plan=head_plan, axis=mesh_lib.CONTEXT,
      attend=kernels.attend_fn(plan.kernel, kernel_options), packed_qkv=plan.packed_qkv)
  out = layout.run_sharded(local, mesh, mesh_lib.CONTEXT, mesh_lib.CONTEXT, q, k, v, valid,
                           plan.kernel)
  return out[:, :seq]
