"""Padding of sequence and head axes, and the key mask that keeps padded attention exact."""
from __future__ import annotations

import jax
import jax.numpy as jnp

SEQ_AXIS = 1
HEAD_AXIS = 2


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def pad_axis(x: jax.Array, axis: int, size: int) -> jax.Array:
  """Zero-pads `axis` of `x` at the end up to `size` (no-op when already that long)."""
  extra = size - x.shape[axis]
  if extra == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, extra)
  return jnp.pad(x, widths)


def pad_seq(x_BxSxHxD: jax.Array, multiple: int) -> jax.Array:
  return pad_axis(x_BxSxHxD, SEQ_AXIS, round_up(x_BxSxHxD.shape[SEQ_AXIS], multiple))


def valid_len_after_padding(kv_valid_len, seq_kv: int, padded_kv: int):
  """The key mask that hides padded keys: the caller's own limit, else the unpadded length."""
  if kv_valid_len is not None:
    return kv_valid_len
  return None if padded_kv == seq_kv else seq_kv


def is_static(kv_valid_len) -> bool:
  return kv_valid_len is None or isinstance(kv_valid_len, int)


def pad_inputs(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, seq_multiple: int,
               padded_heads: int):
  """Pads sequences to `seq_multiple` and q heads to `padded_heads`; returns the key mask too."""
  seq_kv = k_BxTxKxD.shape[1]
  q_BxSxHxD = pad_axis(pad_seq(q_BxSxHxD, seq_multiple), HEAD_AXIS, padded_heads)
  k_BxTxKxD = pad_seq(k_BxTxKxD, seq_multiple)
  v_BxTxKxD = pad_seq(v_BxTxKxD, seq_multiple)
  valid = valid_len_after_padding(kv_valid_len, seq_kv, k_BxTxKxD.shape[1])
  return q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, valid
