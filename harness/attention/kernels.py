"""The table of single-device attention kernels (xla, blockwise, splash, cudnn) and its dispatch.

Callers run these on local shards (inside `shard_map`); nothing here issues a collective.

Conventions shared by every kernel:
  * q_BxSxHxD, k_BxTxKxD, v_BxTxKxD; K divides H and q head h reads kv head h // (H // K).
  * Non-causal softmax with scale 1/sqrt(D), accumulated in float32; the output has q's dtype.
  * `kv_valid_len` (None, a Python int or a traced int32 scalar) masks keys at positions >= it.
  * A query row whose keys are all masked yields output 0 and, in the lse variant, lse = -inf, so
    that a log-sum-exp merge of partial results (ring attention) gives such a block weight 0.
    lse is float32 and laid out B x H x S.
"""
import dataclasses
import logging
import math

import jax
import jax.numpy as jnp

from harness.attention import blockwise
from harness.attention import splash
from harness.attention.types import AttendFn
from harness.attention.types import KernelFn
from harness.attention.types import KernelOptions
from harness.attention.types import LseKernelFn
from harness.errors import UserError


def _seq_lengths_B(kv_valid_len, batch: int) -> jax.Array:
  return jnp.broadcast_to(jnp.asarray(kv_valid_len, jnp.int32), (batch,))


def _zero_if_empty(out_BxSxHxD: jax.Array, kv_valid_len) -> jax.Array:
  # jax.nn.dot_product_attention averages all values when every key is masked; we promise zeros.
  if kv_valid_len is None or (isinstance(kv_valid_len, int) and kv_valid_len > 0):
    return out_BxSxHxD
  return jnp.where(jnp.asarray(kv_valid_len) > 0, out_BxSxHxD, jnp.zeros_like(out_BxSxHxD))


def _xla_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, implementation):
  lengths_B = None if kv_valid_len is None else _seq_lengths_B(kv_valid_len, q_BxSxHxD.shape[0])
  out_BxSxHxD = jax.nn.dot_product_attention(
      q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, key_value_seq_lengths=lengths_B,
      implementation=implementation)
  return _zero_if_empty(out_BxSxHxD, kv_valid_len)


def _cudnn_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len):
  if q_BxSxHxD.dtype not in (jnp.bfloat16, jnp.float16):
    raise UserError(f"attention.kernel='cudnn' needs bfloat16 or float16 inputs, got "
                    f"{q_BxSxHxD.dtype}; valid choices for this dtype: xla, blockwise")
  return _xla_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, "cudnn")


def _xla_attention_lse(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len):
  """Dense einsum attention that also returns the log-sum-exp; differentiable through both."""
  b, s, h, d = q_BxSxHxD.shape
  t, kv_heads = k_BxTxKxD.shape[1], k_BxTxKxD.shape[2]
  q_BxSxKxGxD = q_BxSxHxD.reshape(b, s, kv_heads, h // kv_heads, d)
  logits_BxKxGxSxT = jnp.einsum("bskgd,btkd->bkgst", q_BxSxKxGxD, k_BxTxKxD,
                                preferred_element_type=jnp.float32) * (1.0 / math.sqrt(d))
  if kv_valid_len is not None:
    valid_T = jnp.arange(t) < jnp.asarray(kv_valid_len, jnp.int32)
    logits_BxKxGxSxT = jnp.where(valid_T, logits_BxKxGxSxT, -jnp.inf)
  max_BxKxGxS = jax.lax.stop_gradient(jnp.max(logits_BxKxGxSxT, axis=-1))
  # The shift only guards exp against overflow; a fully masked row keeps shift 0 to avoid inf-inf.
  shift_BxKxGxS = jnp.where(jnp.isfinite(max_BxKxGxS), max_BxKxGxS, 0.0)
  p_BxKxGxSxT = jnp.exp(logits_BxKxGxSxT - shift_BxKxGxS[..., None])
  denom_BxKxGxS = jnp.sum(p_BxKxGxSxT, axis=-1)
  nonempty_BxKxGxS = denom_BxKxGxS > 0
  safe_denom_BxKxGxS = jnp.where(nonempty_BxKxGxS, denom_BxKxGxS, 1.0)
  out_BxSxKxGxD = jnp.einsum("bkgst,btkd->bskgd", p_BxKxGxSxT.astype(v_BxTxKxD.dtype), v_BxTxKxD,
                             preferred_element_type=jnp.float32)
  out_BxSxKxGxD = out_BxSxKxGxD / jnp.moveaxis(safe_denom_BxKxGxS, -1, 1)[..., None]
  lse_BxKxGxS = jnp.where(nonempty_BxKxGxS, shift_BxKxGxS + jnp.log(safe_denom_BxKxGxS), -jnp.inf)
  return (out_BxSxKxGxD.reshape(b, s, h, d).astype(q_BxSxHxD.dtype),
          lse_BxKxGxS.reshape(b, h, s))


def _xla_kernel(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options):
  del options
  return _xla_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, "xla")


def _xla_kernel_lse(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options):
  del options
  return _xla_attention_lse(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len)


def _cudnn_kernel(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options):
  del options
  return _cudnn_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len)


def _blockwise_kernel(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options):
  out_BxSxHxD, _ = blockwise.blockwise_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len,
                                                 options)
  return out_BxSxHxD


def _splash_kernel(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options):
  return splash.splash_attention(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options,
                                 interpret=options.interpret)


def _splash_kernel_lse(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options):
  return splash.splash_attention_lse(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options,
                                     interpret=options.interpret)


@dataclasses.dataclass(frozen=True)
class Kernel:
  """A local kernel: its function, its differentiable (out, lse) form if any, its platforms."""
  fn: KernelFn
  lse_fn: LseKernelFn | None  # needed by log-sum-exp merges (ring attention)
  platforms: tuple[str, ...] | None  # None: every platform


KERNEL_TABLE: dict[str, Kernel] = {
    "xla": Kernel(_xla_kernel, _xla_kernel_lse, None),
    "blockwise": Kernel(_blockwise_kernel, blockwise.blockwise_attention, None),
    "splash": Kernel(_splash_kernel, _splash_kernel_lse, ("tpu",)),
    "cudnn": Kernel(_cudnn_kernel, None, ("gpu",)),
}

KERNELS = tuple(KERNEL_TABLE)
LSE_KERNELS = tuple(name for name, k in KERNEL_TABLE.items() if k.lse_fn is not None)


def available_kernels(platform: str) -> tuple[str, ...]:
  """Kernels that can run (or AOT-compile) on `platform` ('cpu', 'gpu'/'cuda', 'rocm', 'tpu')."""
  platform = _normalize_platform(platform)
  return tuple(name for name, k in KERNEL_TABLE.items()
               if k.platforms is None or platform in k.platforms)


def _normalize_platform(platform: str) -> str:
  platform = platform.lower()
  return "gpu" if platform == "cuda" else platform


def current_platform() -> str:
  """Platform being traced for: the shard_map mesh's devices if any, else the default backend."""
  abstract_mesh = jax.sharding.get_abstract_mesh()
  device = None if abstract_mesh.empty else getattr(abstract_mesh, "abstract_device", None)
  platform = getattr(device, "platform", None) or jax.default_backend()
  return _normalize_platform(platform)


def _check_kernel(kernel: str, need_lse: bool, interpret: bool = False) -> None:
  if kernel not in KERNELS:
    raise UserError(f"attention.kernel={kernel!r} is unknown; valid choices: {', '.join(KERNELS)}")
  platform = current_platform()
  available = available_kernels(platform) + (("splash",) if interpret else ())
  if kernel not in available:
    raise UserError(f"attention.kernel={kernel!r} is not available on {platform}; "
                    f"available on {platform}: {', '.join(available)}")
  if need_lse and kernel not in LSE_KERNELS:
    raise UserError(f"attention.kernel={kernel!r} has no log-sum-exp form (needed by ring attention); "
                    f"valid choices: {', '.join(LSE_KERNELS)}")


def _check_shapes(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array) -> None:
  if q_BxSxHxD.ndim != 4 or k_BxTxKxD.shape != v_BxTxKxD.shape:
    raise ValueError(f"attention expects q [B,S,H,D] and k, v [B,T,K,D] of one shape; got "
                     f"{q_BxSxHxD.shape}, {k_BxTxKxD.shape}, {v_BxTxKxD.shape}")
  (b, _, h, d), (bk, _, kh, dk) = q_BxSxHxD.shape, k_BxTxKxD.shape
  if b != bk or d != dk or h % kh:
    raise ValueError(f"attention needs equal batch and head_dim and kv_heads dividing heads; got "
                     f"q {q_BxSxHxD.shape}, k {k_BxTxKxD.shape}")


def _check_valid_len(kv_valid_len, seq_kv: int) -> None:
  if isinstance(kv_valid_len, int) and not 0 <= kv_valid_len <= seq_kv:
    raise ValueError(f"kv_valid_len={kv_valid_len} must lie in [0, {seq_kv}]")


def _log_kernel(kernel: str, q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, lse: bool) -> None:
  # Runs at trace time, so once per compiled shape rather than once per step.
  logging.info("attention kernel %s%s ran on %s: q %s %s, kv %s", kernel, " (lse)" if lse else "",
               current_platform(), q_BxSxHxD.shape, q_BxSxHxD.dtype, k_BxTxKxD.shape)


def local_attention(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, *,
                    kernel: str, kv_valid_len=None,
                    options: KernelOptions | None = None) -> jax.Array:
  """Softmax attention of one device's q over its k, v with the chosen kernel."""
  options = options or KernelOptions()
  _check_kernel(kernel, need_lse=False, interpret=options.interpret)
  _check_shapes(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD)
  _check_valid_len(kv_valid_len, k_BxTxKxD.shape[1])
  _log_kernel(kernel, q_BxSxHxD, k_BxTxKxD, lse=False)
  return KERNEL_TABLE[kernel].fn(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options)


def local_attention_lse(q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, *,
                        kernel: str, kv_valid_len=None,
                        options: KernelOptions | None = None) -> tuple[jax.Array, jax.Array]:
  """Attention output and its float32 log-sum-exp lse_BxHxS (-inf where every key is masked)."""
  options = options or KernelOptions()
  _check_kernel(kernel, need_lse=True, interpret=options.interpret)
  _check_shapes(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD)
  _check_valid_len(kv_valid_len, k_BxTxKxD.shape[1])
  _log_kernel(kernel, q_BxSxHxD, k_BxTxKxD, lse=True)
  return KERNEL_TABLE[kernel].lse_fn(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options)


def attend_fn(kernel: str, options: KernelOptions | None) -> AttendFn:
  """local_attention with the kernel and its options bound: attend(q, k, v, kv_valid_len)."""
  return lambda q, k, v, valid: local_attention(q, k, v, kernel=kernel, kv_valid_len=valid,
                                                options=options)
