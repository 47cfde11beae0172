"""Pure-JAX flash attention: online softmax over KV blocks, recomputing blocks in the backward.

Memory is O(seq): the largest intermediate is one block_q x block_kv logits tile per head, never
the S x T matrix, in the forward and (through a custom VJP) in the backward. Works on any backend.
"""
import functools
import math

import jax
import jax.numpy as jnp

from harness.attention.types import KernelOptions
from harness.errors import UserError


def blockwise_attention(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array,
                        kv_valid_len, options: KernelOptions) -> tuple[jax.Array, jax.Array]:
  """Attention output (q's dtype) and float32 lse_BxHxS; sequences need not divide the blocks."""
  b, s, h, d = q_BxSxHxD.shape
  t, kv_heads = k_BxTxKxD.shape[1], k_BxTxKxD.shape[2]
  block_q, block_kv = min(options.block_q, s), min(options.block_kv, t)
  if block_q < 1 or block_kv < 1:
    raise UserError(f"attention.block_q / attention.block_kv must be positive, got "
                    f"{options.block_q}, {options.block_kv}")
  pad_s, pad_t = -s % block_q, -t % block_kv
  # Padded keys are masked; padded query rows are computed and sliced away.
  masked = kv_valid_len is not None or pad_t > 0
  valid_len = jnp.minimum(jnp.asarray(t if kv_valid_len is None else kv_valid_len, jnp.int32), t)

  q_BxSxKxGxD = q_BxSxHxD.reshape(b, s, kv_heads, h // kv_heads, d)
  q_NxBxQxKxGxD = _to_blocks(jnp.pad(q_BxSxKxGxD, [(0, 0), (0, pad_s)] + [(0, 0)] * 3), block_q)
  kv_pad = [(0, 0), (0, pad_t), (0, 0), (0, 0)]
  k_MxBxCxKxD = _to_blocks(jnp.pad(k_BxTxKxD, kv_pad), block_kv)
  v_MxBxCxKxD = _to_blocks(jnp.pad(v_BxTxKxD, kv_pad), block_kv)

  # Inside shard_map every operand must vary over the same mesh axes (scan carries are checked);
  # casting before the custom VJP lets autodiff transpose the cast into the needed psum.
  axes = _varying_axes(q_NxBxQxKxGxD, k_MxBxCxKxD, v_MxBxCxKxD, valid_len)
  q_NxBxQxKxGxD, k_MxBxCxKxD, v_MxBxCxKxD, valid_len = (
      _vary(x, axes) for x in (q_NxBxQxKxGxD, k_MxBxCxKxD, v_MxBxCxKxD, valid_len))
  out_NxBxQxKxGxD, lse_NxBxKxGxQ = _flash(q_NxBxQxKxGxD, k_MxBxCxKxD, v_MxBxCxKxD, valid_len,
                                          1.0 / math.sqrt(d), masked)
  out_BxSxHxD = _from_blocks(out_NxBxQxKxGxD)[:, :s].reshape(b, s, h, d)
  lse_BxHxS = jnp.moveaxis(lse_NxBxKxGxQ, 0, 3).reshape(b, h, s + pad_s)[..., :s]
  return out_BxSxHxD, lse_BxHxS


def _varying_axes(*xs: jax.Array) -> frozenset[str]:
  """shard_map axes over which any of `xs` varies (empty outside shard_map)."""
  axes = frozenset()
  for x in xs:
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)
    axes |= frozenset(getattr(manual, "varying", None) or getattr(aval, "vma", None) or ())
  return axes


def _vary(x: jax.Array, axes: frozenset[str]) -> jax.Array:
  """Marks `x` as varying over `axes`; fresh scan carries start out invariant."""
  missing = tuple(sorted(axes - _varying_axes(x)))
  return jax.lax.pcast(x, missing, to="varying") if missing else x


def _to_blocks(x_BxLx___: jax.Array, block: int) -> jax.Array:
  """[B, L, ...] -> [L / block, B, block, ...], blocks leading so that scans walk them."""
  b, length = x_BxLx___.shape[:2]
  blocked = x_BxLx___.reshape(b, length // block, block, *x_BxLx___.shape[2:])
  return jnp.moveaxis(blocked, 1, 0)


def _from_blocks(x_NxBxQx___: jax.Array) -> jax.Array:
  n, b, block = x_NxBxQx___.shape[:3]
  return jnp.moveaxis(x_NxBxQx___, 0, 1).reshape(b, n * block, *x_NxBxQx___.shape[3:])


def _logits(q_BxQxKxGxD, k_BxCxKxD, block_index, valid_len, scale, masked):
  """Scaled float32 logits of one tile, -inf at keys past valid_len."""
  logits_BxKxGxQxC = jnp.einsum("bqkgd,bckd->bkgqc", q_BxQxKxGxD, k_BxCxKxD,
                                preferred_element_type=jnp.float32) * scale
  if not masked:
    return logits_BxKxGxQxC
  block_kv = k_BxCxKxD.shape[1]
  valid_C = block_index * block_kv + jnp.arange(block_kv) < valid_len
  return jnp.where(valid_C, logits_BxKxGxQxC, -jnp.inf)


def _finite_or_zero(x: jax.Array) -> jax.Array:
  return jnp.where(jnp.isfinite(x), x, 0.0)


def _forward_q_block(q_BxQxKxGxD, k_MxBxCxKxD, v_MxBxCxKxD, valid_len, scale, masked):
  """One q block against every KV block with the online softmax; returns (out, lse)."""
  b, q_len, kv_heads, groups, d = q_BxQxKxGxD.shape

  def step(carry, xs):
    acc_BxKxGxQxD, max_BxKxGxQ, denom_BxKxGxQ = carry
    block_index, k_BxCxKxD, v_BxCxKxD = xs
    logits_BxKxGxQxC = _logits(q_BxQxKxGxD, k_BxCxKxD, block_index, valid_len, scale, masked)
    new_max_BxKxGxQ = jnp.maximum(max_BxKxGxQ, jnp.max(logits_BxKxGxQxC, axis=-1))
    # Rows with no valid key so far keep shift 0, which keeps exp(-inf - shift) = 0, not NaN.
    shift_BxKxGxQ = _finite_or_zero(new_max_BxKxGxQ)
    rescale_BxKxGxQ = jnp.exp(max_BxKxGxQ - shift_BxKxGxQ)
    p_BxKxGxQxC = jnp.exp(logits_BxKxGxQxC - shift_BxKxGxQ[..., None])
    denom_BxKxGxQ = denom_BxKxGxQ * rescale_BxKxGxQ + jnp.sum(p_BxKxGxQxC, axis=-1)
    acc_BxKxGxQxD = acc_BxKxGxQxD * rescale_BxKxGxQ[..., None] + jnp.einsum(
        "bkgqc,bckd->bkgqd", p_BxKxGxQxC.astype(v_BxCxKxD.dtype), v_BxCxKxD,
        preferred_element_type=jnp.float32)
    return (acc_BxKxGxQxD, new_max_BxKxGxQ, denom_BxKxGxQ), None

  axes = _varying_axes(q_BxQxKxGxD, k_MxBxCxKxD, v_MxBxCxKxD, valid_len)
  init = (_vary(jnp.zeros((b, kv_heads, groups, q_len, d), jnp.float32), axes),
          _vary(jnp.full((b, kv_heads, groups, q_len), -jnp.inf, jnp.float32), axes),
          _vary(jnp.zeros((b, kv_heads, groups, q_len), jnp.float32), axes))
  xs = (jnp.arange(k_MxBxCxKxD.shape[0]), k_MxBxCxKxD, v_MxBxCxKxD)
  (acc_BxKxGxQxD, max_BxKxGxQ, denom_BxKxGxQ), _ = jax.lax.scan(step, init, xs)
  nonempty_BxKxGxQ = denom_BxKxGxQ > 0
  safe_denom_BxKxGxQ = jnp.where(nonempty_BxKxGxQ, denom_BxKxGxQ, 1.0)
  out_BxKxGxQxD = acc_BxKxGxQxD / safe_denom_BxKxGxQ[..., None]
  lse_BxKxGxQ = jnp.where(nonempty_BxKxGxQ,
                          _finite_or_zero(max_BxKxGxQ) + jnp.log(safe_denom_BxKxGxQ), -jnp.inf)
  out_BxQxKxGxD = jnp.moveaxis(out_BxKxGxQxD, 3, 1).astype(q_BxQxKxGxD.dtype)
  return out_BxQxKxGxD, lse_BxKxGxQ


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _flash(q_NxBxQxKxGxD, k_MxBxCxKxD, v_MxBxCxKxD, valid_len, scale, masked):
  """Blocked attention; q blocks are mapped sequentially so only one tile is live at a time."""
  return jax.lax.map(
      lambda q_BxQxKxGxD: _forward_q_block(q_BxQxKxGxD, k_MxBxCxKxD, v_MxBxCxKxD, valid_len,
                                           scale, masked), q_NxBxQxKxGxD)


def _flash_fwd(q_NxBxQxKxGxD, k_MxBxCxKxD, v_MxBxCxKxD, valid_len, scale, masked):
  out, lse = _flash(q_NxBxQxKxGxD, k_MxBxCxKxD, v_MxBxCxKxD, valid_len, scale, masked)
  return (out, lse), (q_NxBxQxKxGxD, k_MxBxCxKxD, v_MxBxCxKxD, valid_len, out, lse)


def _flash_bwd(scale, masked, residuals, cotangents):
  """Flash-attention backward: KV blocks outside, q blocks inside, tiles recomputed from lse."""
  q_NxBxQxKxGxD, k_MxBxCxKxD, v_MxBxCxKxD, valid_len, out_NxBxQxKxGxD, lse_NxBxKxGxQ = residuals
  dout_NxBxQxKxGxD, dlse_NxBxKxGxQ = cotangents
  # d lse / d logits = p, so an lse cotangent folds into the softmax-gradient row term.
  delta_NxBxQxKxG = jnp.sum(dout_NxBxQxKxGxD.astype(jnp.float32) *
                            out_NxBxQxKxGxD.astype(jnp.float32), axis=-1)
  delta_NxBxKxGxQ = jnp.moveaxis(delta_NxBxQxKxG, 2, 4) - dlse_NxBxKxGxQ
  # Fully masked rows have p = 0; zeroing their row term keeps a stray inf cotangent out.
  delta_NxBxKxGxQ = jnp.where(jnp.isfinite(lse_NxBxKxGxQ), delta_NxBxKxGxQ, 0.0)
  shift_NxBxKxGxQ = _finite_or_zero(lse_NxBxKxGxQ)
  axes = _varying_axes(*residuals, *cotangents)

  def kv_step(dq_NxBxQxKxGxD, kv_xs):
    block_index, k_BxCxKxD, v_BxCxKxD = kv_xs

    def q_step(dkv, q_xs):
      dk_BxCxKxD, dv_BxCxKxD = dkv
      q_BxQxKxGxD, dout_BxQxKxGxD, shift_BxKxGxQ, delta_BxKxGxQ = q_xs
      logits_BxKxGxQxC = _logits(q_BxQxKxGxD, k_BxCxKxD, block_index, valid_len, scale, masked)
      p_BxKxGxQxC = jnp.exp(logits_BxKxGxQxC - shift_BxKxGxQ[..., None])
      dv_BxCxKxD += jnp.einsum("bkgqc,bqkgd->bckd", p_BxKxGxQxC.astype(dout_BxQxKxGxD.dtype),
                               dout_BxQxKxGxD, preferred_element_type=jnp.float32)
      dp_BxKxGxQxC = jnp.einsum("bqkgd,bckd->bkgqc", dout_BxQxKxGxD, v_BxCxKxD,
                                preferred_element_type=jnp.float32)
      ds_BxKxGxQxC = p_BxKxGxQxC * (dp_BxKxGxQxC - delta_BxKxGxQ[..., None]) * scale
      dq_BxQxKxGxD = jnp.einsum("bkgqc,bckd->bqkgd", ds_BxKxGxQxC.astype(k_BxCxKxD.dtype),
                                k_BxCxKxD, preferred_element_type=jnp.float32)
      dk_BxCxKxD += jnp.einsum("bkgqc,bqkgd->bckd", ds_BxKxGxQxC.astype(q_BxQxKxGxD.dtype),
                               q_BxQxKxGxD, preferred_element_type=jnp.float32)
      return (dk_BxCxKxD, dv_BxCxKxD), dq_BxQxKxGxD

    zeros_BxCxKxD = _vary(jnp.zeros(k_BxCxKxD.shape, jnp.float32), axes)
    (dk_BxCxKxD, dv_BxCxKxD), dq_NxBxQxKxGxD_block = jax.lax.scan(
        q_step, (zeros_BxCxKxD, zeros_BxCxKxD),
        (q_NxBxQxKxGxD, dout_NxBxQxKxGxD, shift_NxBxKxGxQ, delta_NxBxKxGxQ))
    return dq_NxBxQxKxGxD + dq_NxBxQxKxGxD_block, (dk_BxCxKxD, dv_BxCxKxD)

  dq_init = _vary(jnp.zeros(q_NxBxQxKxGxD.shape, jnp.float32), axes)
  dq_NxBxQxKxGxD, (dk_MxBxCxKxD, dv_MxBxCxKxD) = jax.lax.scan(
      kv_step, dq_init, (jnp.arange(k_MxBxCxKxD.shape[0]), k_MxBxCxKxD, v_MxBxCxKxD))
  return (dq_NxBxQxKxGxD.astype(q_NxBxQxKxGxD.dtype), dk_MxBxCxKxD.astype(k_MxBxCxKxD.dtype),
          dv_MxBxCxKxD.astype(v_MxBxCxKxD.dtype), None)


_flash.defvjp(_flash_fwd, _flash_bwd)
