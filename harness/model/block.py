"""One WAN-style DiT block: modulated self-attention, cross-attention to text, GELU-tanh FFN."""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from harness.attention.types import ProjectionWeights
from harness.model.config import DiTConfig
from harness.model.embed import Mlp, _linear, gelu_tanh
from harness.model.rope import apply_rope

AttendFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class Runtime:
  """What a forward pass needs from outside the parameters: attention and layout."""
  self_attention: AttendFn
  cross_attention: AttendFn
  constrain: Callable[[jnp.ndarray], jnp.ndarray] = lambda x: x
  # When set, self-attention hands x and its weights over and projects per head group inside
  # (attention.pipelined_projections); see harness/attention/pipelined.py.
  projected_self_attention: Callable | None = None


class Attention(nnx.Module):
  """Multi-head attention with RMSNorm on q and k over the full width (as Wan does)."""

  def __init__(self, cfg: DiTConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.q, self.k, self.v, self.o = (_linear(cfg, cfg.dim, cfg.dim, rngs) for _ in range(4))
    # Outputs in the compute dtype: float32 scales would otherwise promote q and k to float32
    # in a bfloat16 model and double their all-to-all traffic.
    norm = lambda: nnx.RMSNorm(cfg.dim, epsilon=cfg.eps, dtype=jnp.dtype(cfg.dtype),
                               param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
    self.norm_q, self.norm_k = norm(), norm()

  def projection_weights(self) -> ProjectionWeights:
    """q/k/v/o kernels and biases and the q/k norm scales, as pipelined projections take them."""
    return ProjectionWeights(
        wq=self.q.kernel[...], bq=self.q.bias[...], wk=self.k.kernel[...], bk=self.k.bias[...],
        wv=self.v.kernel[...], bv=self.v.bias[...], wo=self.o.kernel[...], bo=self.o.bias[...],
        norm_q=self.norm_q.scale[...], norm_k=self.norm_k.scale[...])

  def __call__(self, x_BxSxD, ctx_BxTxD, attend: AttendFn, angles_SxP=None, projected=None):
    if projected is not None:
      return projected(x_BxSxD, angles_SxP, self.projection_weights(), num_heads=self.cfg.num_heads,
                       eps=self.cfg.eps, dtype=self.cfg.dtype, rotate=apply_rope)
    b, s, _ = x_BxSxD.shape
    t = ctx_BxTxD.shape[1]
    h, d = self.cfg.num_heads, self.cfg.head_dim
    q_BxSxHxD = self.norm_q(self.q(x_BxSxD)).reshape(b, s, h, d)
    k_BxTxHxD = self.norm_k(self.k(ctx_BxTxD)).reshape(b, t, h, d)
    v_BxTxHxD = self.v(ctx_BxTxD).reshape(b, t, h, d)
    if angles_SxP is not None:
      q_BxSxHxD = apply_rope(q_BxSxHxD, angles_SxP)
      k_BxTxHxD = apply_rope(k_BxTxHxD, angles_SxP)
    out_BxSxHxD = attend(q_BxSxHxD, k_BxTxHxD, v_BxTxHxD)
    return self.o(out_BxSxHxD.reshape(b, s, h * d))


class Block(nnx.Module):
  """adaLN-modulated transformer block (6 modulation vectors from the time embedding)."""

  def __init__(self, cfg: DiTConfig, rngs: nnx.Rngs):
    self.self_attn = Attention(cfg, rngs)
    self.cross_attn = Attention(cfg, rngs)
    self.norm1 = nnx.LayerNorm(cfg.dim, epsilon=cfg.eps, use_bias=False, use_scale=False, rngs=rngs)
    self.norm2 = nnx.LayerNorm(cfg.dim, epsilon=cfg.eps, use_bias=False, use_scale=False, rngs=rngs)
    self.norm3 = nnx.LayerNorm(cfg.dim, epsilon=cfg.eps, rngs=rngs)
    self.ffn = Mlp(cfg, cfg.dim, cfg.ffn_dim, cfg.dim, gelu_tanh, rngs)
    init = jax.random.normal(rngs.params(), (6, cfg.dim)) / math.sqrt(cfg.dim)
    self.modulation = nnx.Param(init.astype(jnp.dtype(cfg.param_dtype)))

  def __call__(self, x_BxSxD, e6_Bx6xD, text_BxTxD, angles_SxP, rt: Runtime):
    mod = self.modulation[...][None].astype(jnp.float32) + e6_Bx6xD.astype(jnp.float32)
    shift1, scale1, gate1, shift2, scale2, gate2 = (mod[:, i:i + 1] for i in range(6))
    h = (self.norm1(x_BxSxD) * (1 + scale1) + shift1).astype(x_BxSxD.dtype)
    y = self.self_attn(h, h, rt.self_attention, angles_SxP, rt.projected_self_attention)
    x_BxSxD = rt.constrain(x_BxSxD + (y * gate1).astype(x_BxSxD.dtype))
    y = self.cross_attn(self.norm3(x_BxSxD), text_BxTxD, rt.cross_attention)
    x_BxSxD = rt.constrain(x_BxSxD + y)
    h = (self.norm2(x_BxSxD) * (1 + scale2) + shift2).astype(x_BxSxD.dtype)
    x_BxSxD = x_BxSxD + (self.ffn(h) * gate2).astype(x_BxSxD.dtype)
    return rt.constrain(x_BxSxD)
