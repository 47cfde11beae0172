"""The one layout every variant uses: batch over ('data','fsdp'), sequence over the context axes."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from harness import mesh as mesh_lib
from harness.attention import padding
from harness.attention.types import AttendFn
from harness.errors import UserError

# Pallas outputs carry no varying-axes type in jax 0.10.2, so shard_map's vma check rejects them.
UNCHECKED_KERNELS = ("splash",)


def check_vma(kernel: str) -> bool:
  return kernel not in UNCHECKED_KERNELS


def batch_parallelism(mesh: Mesh) -> int:
  return mesh.shape[mesh_lib.DATA] * mesh.shape[mesh_lib.FSDP]


def check_batch(batch: int, mesh: Mesh) -> None:
  ways = batch_parallelism(mesh)
  if batch % ways:
    raise UserError(f"batch={batch} must be a multiple of mesh.data*mesh.fsdp={ways}")


def run_sharded(local_fn: AttendFn, mesh: Mesh, q_seq_axes, kv_seq_axes, q_BxSxHxD: jax.Array,
                k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, kv_valid_len,
                kernel: str, head_axes=None) -> jax.Array:
  """Runs local_fn(q, k, v, kv_valid_len) on local shards; a traced kv_valid_len rides along."""
  q_spec = P(mesh_lib.BATCH_AXES, q_seq_axes, head_axes, None)
  kv_spec = P(mesh_lib.BATCH_AXES, kv_seq_axes, head_axes, None)
  if padding.is_static(kv_valid_len):
    body = lambda q, k, v: local_fn(q, k, v, kv_valid_len)
    operands, specs = (q_BxSxHxD, k_BxTxKxD, v_BxTxKxD), (q_spec, kv_spec, kv_spec)
  else:
    body = local_fn
    operands = (q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, jnp.asarray(kv_valid_len, jnp.int32))
    specs = (q_spec, kv_spec, kv_spec, P())
  return jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=q_spec,
                       check_vma=check_vma(kernel))(*operands)
