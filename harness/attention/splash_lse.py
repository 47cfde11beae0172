"""Splash attention with its log-sum-exp, differentiable in both, for log-sum-exp merges (ring).

Splash returns its float32 logsumexp only as a forward residual (`save_residuals=True` has no
gradient). Ring merges differentiate through lse too: with cotangents (dout, dlse) the logits'
gradient is p * (dout.v - (rowsum(out * dout) - dlse)), i.e. splash's own backward kernels with
di = rowsum(out * dout) - dlse. Those kernels are private to jax 0.10.2's splash module.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash_lib

from harness.attention import splash_cost


# The kernel is a pytree of mask arrays created under the caller's trace, so it is an ordinary
# (integer, zero-cotangent) argument rather than a non-differentiable one.
@jax.custom_vjp
def kernel_with_lse(kernel, q_HxSxD, k_KxTxD, v_KxTxD, segment_ids):
  """(out_HxSxD, lse_HxS) of one batch element; `kernel` built with save_residuals=True."""
  out_HxSxD, (lse_HxS,) = kernel(q_HxSxD, k_KxTxD, v_KxTxD, segment_ids)
  return out_HxSxD, lse_HxS


def _fwd(kernel, q_HxSxD, k_KxTxD, v_KxTxD, segment_ids):
  out_HxSxD, lse_HxS = kernel_with_lse(kernel, q_HxSxD, k_KxTxD, v_KxTxD, segment_ids)
  return (out_HxSxD, lse_HxS), (kernel, q_HxSxD, k_KxTxD, v_KxTxD, segment_ids, out_HxSxD,
                                lse_HxS)


def _bwd(res, cotangents):
  kernel, q, k, v, segment_ids, out_HxSxD, lse_HxS = res
  dout_HxSxD, dlse_HxS = cotangents
  di_HxS = jnp.einsum("hsd,hsd->hs", out_HxSxD.astype(jnp.float32),
                      dout_HxSxD.astype(jnp.float32)) - dlse_HxS.astype(jnp.float32)
  args = kernel.kwargs
  sizes = args["block_sizes"]
  common = dict(is_mqa=args["is_mqa"], mask_value=args["mask_value"],
                attn_logits_soft_cap=args["attn_logits_soft_cap"], q_layout=sizes.q_layout,
                k_layout=sizes.k_layout, v_layout=sizes.v_layout,
                mask_function=args["mask_function"], interpret=args["interpret"])
  # This rule runs at transpose time, outside the forward's scope: the estimates are set here too.
  with splash_cost.cost_estimates():
    dq, dk, dv = splash_lib._splash_attention_bwd_dkv(  # pylint: disable=protected-access
        q, k, v, segment_ids, None, lse_HxS, dout_HxSxD, di_HxS, bq=sizes.block_q_dkv,
        bkv=sizes.block_kv_dkv, bkv_compute=sizes.block_kv_dkv_compute,
        mask_info=kernel.dkv_mask_info, use_fused_bwd_kernel=sizes.use_fused_bwd_kernel, **common)
    if not sizes.use_fused_bwd_kernel:
      dq = splash_lib._splash_attention_bwd_dq(  # pylint: disable=protected-access
          q, k, v, segment_ids, None, lse_HxS, dout_HxSxD, di_HxS, bq=sizes.block_q_dq,
          bkv=sizes.block_kv_dq, mask_info=kernel.dq_mask_info, **common)
  return None, dq, dk, dv, None


kernel_with_lse.defvjp(_fwd, _bwd)
