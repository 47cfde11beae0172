"""The Ulysses all-to-alls: sequence-sharded to head-sharded and back, inside a shard_map.

Heads-major: heads lead and every axis but the sequence and head_dim is merged into one major
row axis (ulysses.py and pipelined.py both send this way).
`axis` is the shard_map mesh axis the exchange runs over; `name` labels the named scope
`all_to_all_{name}` that HLO tests and trace analysis read.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def heads_major(x_BxSxHxD: jax.Array) -> jax.Array:
  """Heads major, sequence x head_dim minor: a head group is one contiguous block and the local
  batch (the CFG pair) stays out of the minor tile, where TPU layouts would pad it."""
  return x_BxSxHxD.transpose(2, 0, 1, 3)


def exchange_rows(rows_RxSxD: jax.Array, axis: str) -> jax.Array:
  """Block j of the major axis to device j; arrivals stacked on the major axis in source order.

  Split and concatenation both on the major axis: the transfer moves contiguous blocks and the
  reordering around it is an explicit transpose that XLA can fuse with its neighbours, where a
  split and concatenation on different axes makes XLA relayout operands into thin tiles.
  """
  return lax.all_to_all(rows_RxSxD, axis, split_axis=0, concat_axis=0, tiled=True)


def seq_to_heads(x_Nx___xSxD: jax.Array, axis: str, name: str) -> jax.Array:
  """Sequence-sharded to head-sharded. Heads lead; everything but the sequence and head_dim is
  merged into one major row axis, so each device's part is one contiguous block and the local
  batch (the CFG pair) never lands in the minor tile, where TPU layouts would pad it."""
  *lead, seq, d = x_Nx___xSxD.shape
  degree = lax.axis_size(axis)
  with jax.named_scope(f"all_to_all_{name}"):
    rows_RxSxD = exchange_rows(x_Nx___xSxD.reshape(-1, seq, d), axis)
  rows_CxrxSxD = rows_RxSxD.reshape(degree, -1, seq, d).transpose(1, 0, 2, 3)
  return rows_CxrxSxD.reshape(-1, *lead[1:], degree * seq, d)


def heads_to_seq(x_nx___xSxD: jax.Array, axis: str, name: str = "out") -> jax.Array:
  """Head-sharded back to sequence-sharded, with the same merged major rows."""
  *lead, seq, d = x_nx___xSxD.shape
  degree = lax.axis_size(axis)
  rows_CxrxsxD = x_nx___xSxD.reshape(-1, degree, seq // degree, d).transpose(1, 0, 2, 3)
  with jax.named_scope(f"all_to_all_{name}"):
    rows_RxsxD = exchange_rows(rows_CxrxsxD.reshape(-1, seq // degree, d), axis)
  return rows_RxsxD.reshape(-1, *lead[1:], seq // degree, d)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def send_grouped(kv_Nx2xBxSxD: jax.Array, axis: str, group: int) -> jax.Array:
  """Sends every group-th kv head and repeats it on arrival; see heads.py for the backward."""
  sent = seq_to_heads(kv_Nx2xBxSxD[::group], axis, "kv")
  return jnp.repeat(sent, group, axis=0)


def _send_grouped_fwd(kv_Nx2xBxSxD, axis, group):
  return send_grouped(kv_Nx2xBxSxD, axis, group), None


def _send_grouped_bwd(axis, group, _, ct_nx2xBxSxD):
  # One gradient per q head, as if each had its own kv head; the caller sums each group later.
  del group
  return (heads_to_seq(ct_nx2xBxSxD, axis, "kv_grad"),)


send_grouped.defvjp(_send_grouped_fwd, _send_grouped_bwd)
