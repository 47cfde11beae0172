"""Test data and the float64 numpy reference the attention tests compare against.

Both stay on the host: a random op or a reference gradient traced in JAX would be one more XLA
compile per shape, and the suite's time is mostly compiles.
"""
import jax
import jax.numpy as jnp
import numpy as np


def normal(rng: np.random.Generator, shape, dtype=jnp.float32) -> jax.Array:
  """Standard-normal data drawn on the host, then cast (bfloat16 included) and put on a device."""
  return jnp.asarray(rng.standard_normal(shape, np.float32).astype(dtype))


def _float64(*arrays):
  return [None if x is None else np.asarray(x, np.float64) for x in arrays]


def reference(q, k, v, valid_len=None, ct=None, ct_lse=None):
  """Textbook softmax attention in float64, [B, S, H, D] layout, GQA by repeating kv heads.

  Returns (out, lse_BxHxS) and, when the output cotangent `ct` is given, the gradients
  (dq, dk, dv) of sum(out * ct) + sum(lse * ct_lse) by the closed-form softmax backward.
  Keys at or past `valid_len` are masked; a row with no key gives output 0 and lse -inf.
  """
  q, k, v, ct, ct_lse = _float64(q, k, v, ct, ct_lse)
  b, s, h, d = q.shape
  t, kv_heads = k.shape[1], k.shape[2]
  groups, scale = h // kv_heads, 1.0 / np.sqrt(d)
  k_full, v_full = (np.repeat(x, groups, axis=2) for x in (k, v))
  logits = np.einsum("bshd,bthd->bhst", q, k_full) * scale
  logits = np.where(np.arange(t) < (t if valid_len is None else valid_len), logits, -np.inf)
  with np.errstate(invalid="ignore", divide="ignore"):
    shift = np.max(logits, axis=-1, keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    p = np.exp(logits - shift)
    denom = p.sum(-1, keepdims=True)
    probs = p / np.where(denom > 0, denom, 1.0)
    lse = np.where(denom[..., 0] > 0, shift[..., 0] + np.log(denom[..., 0]), -np.inf)
  out = np.einsum("bhst,bthd->bshd", probs, v_full)
  if ct is None:
    return out, lse
  d_probs = np.einsum("bshd,bthd->bhst", ct, v_full)
  d_logits = probs * (d_probs - np.sum(d_probs * probs, axis=-1, keepdims=True))
  if ct_lse is not None:
    d_logits += probs * ct_lse[..., None]
  dq = np.einsum("bhst,bthd->bshd", d_logits, k_full) * scale
  per_head = lambda x: x.reshape(b, t, kv_heads, groups, d).sum(axis=3)
  dk = per_head(np.einsum("bhst,bshd->bthd", d_logits, q) * scale)
  dv = per_head(np.einsum("bhst,bshd->bthd", probs, ct))
  return out, lse, dq, dk, dv
