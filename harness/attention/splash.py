"""TPU splash attention (Pallas) behind the local-attention convention: padding and kv_valid_len.

Splash needs sequence lengths that its block sizes divide, block sizes that are multiples of 128, and
applies no softmax scale. Sequences are padded here; padded and invalid keys are masked with
segment ids (queries carry id 0, keys id 0 when valid and 1 when not), padded queries sliced away.
"""
import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash_lib
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib

from harness.attention import splash_cost
from harness.attention import splash_lse
from harness.attention.types import KernelOptions
from harness.errors import UserError

_LANES = 128


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _block(requested: int | None, default: int, seq: int, binding: str) -> int:
  """A block size clamped to the 128-padded sequence, so short sequences use one block."""
  block = default if requested is None else requested
  if block < _LANES or block % _LANES:
    raise UserError(f"attention.{binding}={block} must be a positive multiple of {_LANES} for splash")
  return min(block, _round_up(seq, _LANES))


def block_sizes(options: KernelOptions, seq_q: int, seq_kv: int):
  """Splash BlockSizes for these sequence lengths, and the padded lengths they divide."""
  block_q = _block(options.block_q, 512, seq_q, "block_q")
  block_kv = _block(options.block_kv, 512, seq_kv, "block_kv")
  sizes = dict(
      block_q=block_q, block_kv=block_kv,
      block_kv_compute=_block(options.block_kv_compute, block_kv, seq_kv, "block_kv_compute"),
      block_q_dkv=_block(options.block_q_dkv, block_q, seq_q, "block_q_dkv"),
      block_kv_dkv=_block(options.block_kv_dkv, block_kv, seq_kv, "block_kv_dkv"),
      block_kv_dkv_compute=_block(options.block_kv_dkv_compute, block_kv, seq_kv,
                                  "block_kv_dkv_compute"))
  if not options.use_fused_bwd_kernel:
    sizes.update(block_q_dq=block_q, block_kv_dq=block_kv)
  padded_q = _round_up(seq_q, max(sizes["block_q"], sizes["block_q_dkv"]))
  padded_kv = _round_up(seq_kv, max(sizes["block_kv"], sizes["block_kv_dkv"]))
  for name, size in sizes.items():
    padded = padded_q if name in ("block_q", "block_q_dkv", "block_q_dq") else padded_kv
    if padded % size:
      raise UserError(f"attention.{name}={size} must divide the padded sequence {padded}; "
                      f"use block sizes that divide each other (e.g. all 512)")
  return splash_lib.BlockSizes(use_fused_bwd_kernel=options.use_fused_bwd_kernel,
                               **sizes), padded_q, padded_kv


def _make_kernel(heads: int, padded_q: int, padded_kv: int, mqa: bool, sizes, interpret: bool,
                 save_residuals: bool = False):
  # Built per trace: the kernel holds arrays created under the caller's trace, so it cannot be cached.
  mask = mask_lib.MultiHeadMask([mask_lib.FullMask((padded_q, padded_kv))] * heads)
  make = splash_lib.make_splash_mqa_single_device if mqa else splash_lib.make_splash_mha_single_device
  return make(mask, block_sizes=sizes, interpret=interpret, save_residuals=save_residuals)


def _prepare(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options, interpret, save_residuals):
  """The kernel, its padded B x H x S x D operands, segment ids and the clamped key count."""
  b, s, h, d = q_BxSxHxD.shape
  t, kv_heads = k_BxTxKxD.shape[1], k_BxTxKxD.shape[2]
  sizes, padded_q, padded_kv = block_sizes(options, s, t)
  mqa = kv_heads == 1
  kernel = _make_kernel(h, padded_q, padded_kv, mqa, sizes, interpret, save_residuals)
  # Splash applies no scale; scaling q in float32 before the cast keeps bf16 rounding to one step.
  scaled_q_BxSxHxD = (q_BxSxHxD.astype(jnp.float32) / math.sqrt(d)).astype(q_BxSxHxD.dtype)
  q_BxHxSxD = jnp.pad(scaled_q_BxSxHxD, [(0, 0), (0, padded_q - s), (0, 0), (0, 0)]).transpose(
      0, 2, 1, 3)
  kv_pad = [(0, 0), (0, padded_kv - t), (0, 0), (0, 0)]
  k_BxKxTxD = jnp.pad(k_BxTxKxD, kv_pad).transpose(0, 2, 1, 3)
  v_BxKxTxD = jnp.pad(v_BxTxKxD, kv_pad).transpose(0, 2, 1, 3)
  if mqa:
    k_BxKxTxD, v_BxKxTxD = k_BxKxTxD[:, 0], v_BxKxTxD[:, 0]
  valid_len = jnp.minimum(jnp.asarray(t if kv_valid_len is None else kv_valid_len, jnp.int32), t)
  segment_ids = splash_lib.SegmentIds(
      q=jnp.zeros((padded_q,), jnp.int32),
      kv=(jnp.arange(padded_kv) >= valid_len).astype(jnp.int32))
  return kernel, (q_BxHxSxD, k_BxKxTxD, v_BxKxTxD, segment_ids), valid_len


def _vmapped(fn, operands, kernel=None):
  try:
    if kernel is not None:
      return jax.vmap(fn, in_axes=(None, 0, 0, 0, None))(kernel, *operands)
    return jax.vmap(fn, in_axes=(0, 0, 0, None))(*operands)
  except ValueError as e:
    if "check_vma" not in str(e):
      raise
    # Pallas outputs carry no varying-mesh-axes type in this JAX, so shard_map cannot check them.
    raise ValueError("attention.kernel='splash' must run inside jax.shard_map(..., check_vma=False); "
                     "valid choices with vma checking: xla, blockwise, cudnn") from None


def splash_attention(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array,
                     kv_valid_len, options: KernelOptions,
                     interpret: bool = False) -> jax.Array:
  """Splash attention (MHA, GQA, or MQA when K == 1); `interpret` runs the kernel in Python."""
  s = q_BxSxHxD.shape[1]
  kernel, operands, valid_len = _prepare(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options,
                                         interpret, save_residuals=False)
  with splash_cost.cost_estimates():  # so XLA's scheduler can overlap transfers with the kernel
    out_BxHxSxD = _vmapped(kernel, operands)
  out_BxSxHxD = out_BxHxSxD.transpose(0, 2, 1, 3)[:, :s].astype(q_BxSxHxD.dtype)
  # With every key masked splash averages all values; the shared convention is output 0.
  return jnp.where(valid_len > 0, out_BxSxHxD, jnp.zeros_like(out_BxSxHxD))


def splash_attention_lse(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array,
                         kv_valid_len, options: KernelOptions,
                         interpret: bool = False) -> tuple[jax.Array, jax.Array]:
  """Splash attention and its float32 lse_BxHxS (-inf where every key is masked)."""
  s = q_BxSxHxD.shape[1]
  kernel, operands, valid_len = _prepare(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options,
                                         interpret, save_residuals=True)
  with splash_cost.cost_estimates():
    out_BxHxSxD, lse_BxHxS = _vmapped(splash_lse.kernel_with_lse, operands, kernel)
  out_BxSxHxD = out_BxHxSxD.transpose(0, 2, 1, 3)[:, :s].astype(q_BxSxHxD.dtype)
  nonempty = valid_len > 0
  return (jnp.where(nonempty, out_BxSxHxD, jnp.zeros_like(out_BxSxHxD)),
          jnp.where(nonempty, lse_BxHxS[:, :, :s], -jnp.inf))
