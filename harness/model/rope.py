"""3D rotary position embedding over (frame, height, width), split as in Wan."""
from __future__ import annotations

import jax.numpy as jnp

ROPE_THETA = 10000.0


def axis_pair_counts(head_dim: int) -> tuple[int, int, int]:
  """Rotation pairs given to time, height and width (Wan: time takes the remainder)."""
  pairs = head_dim // 2
  return pairs - 2 * (pairs // 3), pairs // 3, pairs // 3


def _angles_NxP(positions_N: jnp.ndarray, pairs: int) -> jnp.ndarray:
  inv_freq_P = 1.0 / (ROPE_THETA ** (jnp.arange(pairs, dtype=jnp.float32) * 2.0 / (2 * pairs)))
  return positions_N.astype(jnp.float32)[:, None] * inv_freq_P[None, :]


def rope_angles(grid: tuple[int, int, int], head_dim: int) -> jnp.ndarray:
  """Rotation angles [tokens, head_dim // 2] for a (frames, height, width) token grid."""
  f, h, w = grid
  pt, ph, pw = axis_pair_counts(head_dim)
  ff, hh, ww = jnp.meshgrid(jnp.arange(f), jnp.arange(h), jnp.arange(w), indexing="ij")
  return jnp.concatenate([
      _angles_NxP(ff.reshape(-1), pt),
      _angles_NxP(hh.reshape(-1), ph),
      _angles_NxP(ww.reshape(-1), pw),
  ], axis=-1)


def apply_rope(x_BxSxHxD: jnp.ndarray, angles_SxP: jnp.ndarray) -> jnp.ndarray:
  """Rotates adjacent channel pairs of every head by the token's angles."""
  b, s, h, d = x_BxSxHxD.shape
  x = x_BxSxHxD.astype(jnp.float32).reshape(b, s, h, d // 2, 2)
  cos = jnp.cos(angles_SxP)[None, :, None, :]
  sin = jnp.sin(angles_SxP)[None, :, None, :]
  real = x[..., 0] * cos - x[..., 1] * sin
  imag = x[..., 0] * sin + x[..., 1] * cos
  return jnp.stack([real, imag], axis=-1).reshape(b, s, h, d).astype(x_BxSxHxD.dtype)
