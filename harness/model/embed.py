"""Patch, time and text embeddings of the DiT, and the output head."""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from harness.model.config import DiTConfig


def sinusoidal_embedding(t_B: jnp.ndarray, dim: int) -> jnp.ndarray:
  """[cos | sin] embedding of diffusion time in [0, 1000]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  args_BxH = t_B.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(args_BxH), jnp.sin(args_BxH)], axis=-1)


def _linear(cfg: DiTConfig, d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(d_in, d_out, dtype=jnp.dtype(cfg.dtype),
                    param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)


def float32_config(cfg: DiTConfig) -> DiTConfig:
  """The same shapes with float32 parameters and compute."""
  return dataclasses.replace(cfg, dtype="float32", param_dtype="float32")


class Mlp(nnx.Module):
  """Linear → activation → Linear."""

  def __init__(self, cfg: DiTConfig, d_in: int, d_hidden: int, d_out: int, act, rngs: nnx.Rngs):
    self.fc1 = _linear(cfg, d_in, d_hidden, rngs)
    self.fc2 = _linear(cfg, d_hidden, d_out, rngs)
    self.act = act

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return self.fc2(self.act(self.fc1(x)))


def gelu_tanh(x: jnp.ndarray) -> jnp.ndarray:
  return jax.nn.gelu(x, approximate=True)


class Embeddings(nnx.Module):
  """Patch embedding (a strided Conv3d written as a linear map), time and text MLPs."""

  def __init__(self, cfg: DiTConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.patch = _linear(cfg, cfg.in_channels * cfg.patch_volume, cfg.dim, rngs)
    self.text = Mlp(cfg, cfg.text_dim, cfg.dim, cfg.dim, gelu_tanh, rngs)
    # Float32 weights and compute whatever the model's dtypes, as diffusers' WanTransformer3DModel
    # keeps `time_embedder` (its _keep_in_fp32_modules).
    self.time = Mlp(float32_config(cfg), cfg.freq_dim, cfg.dim, cfg.dim, jax.nn.silu, rngs)
    self.time_proj = _linear(cfg, cfg.dim, 6 * cfg.dim, rngs)

  def patchify(self, latents_BxFxHxWxC: jnp.ndarray) -> jnp.ndarray:
    """[B, F, H, W, C] → [B, tokens, patch_volume * C] in (f, h, w) token order."""
    b, f, h, w, c = latents_BxFxHxWxC.shape
    pf, ph, pw = self.cfg.patch
    x = latents_BxFxHxWxC.reshape(b, f // pf, pf, h // ph, ph, w // pw, pw, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, (f // pf) * (h // ph) * (w // pw), pf * ph * pw * c)

  def __call__(self, latents, t_B, text_BxLxT):
    x_BxSxD = self.patch(self.patchify(latents))
    # Back to the compute dtype after the MLP, as diffusers casts temb to the hidden states' dtype.
    e_BxD = self.time(sinusoidal_embedding(t_B, self.cfg.freq_dim)).astype(self.cfg.dtype)
    e6_Bx6xD = self.time_proj(jax.nn.silu(e_BxD)).reshape(-1, 6, self.cfg.dim)
    return x_BxSxD, e_BxD, e6_Bx6xD, self.text(text_BxLxT)


class Head(nnx.Module):
  """Final modulated LayerNorm and projection back to patches, then unpatchify."""

  def __init__(self, cfg: DiTConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.norm = nnx.LayerNorm(cfg.dim, epsilon=cfg.eps, use_bias=False, use_scale=False, rngs=rngs)
    self.proj = _linear(cfg, cfg.dim, cfg.out_channels * cfg.patch_volume, rngs)
    init = jax.random.normal(rngs.params(), (2, cfg.dim)) / math.sqrt(cfg.dim)
    self.modulation = nnx.Param(init.astype(jnp.dtype(cfg.param_dtype)))

  def __call__(self, x_BxSxD, e_BxD, grid):
    shift_BxD, scale_BxD = jnp.split(self.modulation[...][None] + e_BxD[:, None], 2, axis=1)
    y = self.norm(x_BxSxD) * (1 + scale_BxD) + shift_BxD
    return self.unpatchify(self.proj(y), grid)

  def unpatchify(self, y_BxSxP: jnp.ndarray, grid) -> jnp.ndarray:
    f, h, w = grid
    pf, ph, pw = self.cfg.patch
    c = self.cfg.out_channels
    b = y_BxSxP.shape[0]
    x = y_BxSxP.reshape(b, f, h, w, pf, ph, pw, c).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, f * pf, h * ph, w * pw, c)
