"""Ulysses inside, ring outside: 'context' split privately into (ring, ulysses), ulysses inner.

Context index c = r * ulysses_degree + u, so the private mesh lays sequence blocks out exactly as
'context' does and entering it moves no data. After the Ulysses all-to-all a device holds the ring
block r of the sequence for its head group; the ring then passes kv blocks over 'ring'.
"""
from __future__ import annotations

import jax
from jax.sharding import Mesh

from harness import mesh as mesh_lib
from harness.attention import heads as heads_lib
from harness.attention import layout
from harness.attention import padding
from harness.attention import ring
from harness.attention import ulysses
from harness.attention.types import AttentionPlan
from harness.attention.types import KernelOptions

RING = "ring"
ULYSSES = "ulysses"
SEQ_AXES = (RING, ULYSSES)


def split_context_mesh(mesh: Mesh, ulysses_degree: int) -> Mesh:
  """The mesh's devices with 'context' reshaped into ('ring', 'ulysses')."""
  sizes = [mesh.shape[a] for a in mesh_lib.AXES]
  devices = mesh.devices.reshape(sizes)  # In case the mesh was built with another axis order.
  context = mesh.shape[mesh_lib.CONTEXT]
  grid = devices.reshape(sizes[0], sizes[1], context // ulysses_degree, ulysses_degree, sizes[3])
  return Mesh(grid, (mesh_lib.DATA, mesh_lib.FSDP, RING, ULYSSES, mesh_lib.TENSOR))


def ulysses_ring_attention(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, *,
                           mesh: Mesh, plan: AttentionPlan, kv_valid_len,
                           kernel_options: KernelOptions | None) -> jax.Array:
  """Head-chunked Ulysses over the inner factor, ring over the outer factor of 'context'."""
  if tuple(mesh.axis_names) != mesh_lib.AXES:
    raise ValueError(f"mesh axes must be {mesh_lib.AXES}, got {mesh.axis_names}")
  ulysses_degree, kernel, packed_qkv = plan.ulysses_degree, plan.kernel, plan.packed_qkv
  ring_size = mesh.shape[mesh_lib.CONTEXT] // ulysses_degree
  private = split_context_mesh(mesh, ulysses_degree)
  head_plan = plan.head_plan
  heads_lib.log_plan(head_plan, f"ulysses_ring(ring={ring_size})", kernel)
  seq = q_BxSxHxD.shape[1]
  q, k, v, valid = padding.pad_inputs(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len,
                                      ring_size * ulysses_degree, head_plan.padded_heads)

  def attend(q_c, k_c, v_c, valid_c):
    return ring.ring_local(q_c, k_c, v_c, valid_c, axis=RING, size=ring_size, kernel=kernel,
                           packed_kv=packed_qkv, kernel_options=kernel_options)

  local = lambda q, k, v, valid: ulysses.ulysses_local(
      q, k, v, valid, plan=head_plan, axis=ULYSSES, attend=attend, packed_qkv=packed_qkv)
  out = layout.run_sharded(local, private, SEQ_AXES, SEQ_AXES, q, k, v, valid, kernel)
  return out[:, :seq]
