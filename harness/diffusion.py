"""Rectified-flow training loss and the Euler sampler with classifier-free guidance."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# model(latents, t in [0, 1000], text) → velocity
VelocityFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]
TIME_SCALE = 1000.0


def flow_matching_loss(velocity: VelocityFn, batch: dict, key: jax.Array) -> jnp.ndarray:
  """MSE between predicted and true velocity (noise − data) at logit-normal times."""
  x0 = batch["latents"]
  k_t, k_noise = jax.random.split(key)
  t_B = jax.nn.sigmoid(jax.random.normal(k_t, (x0.shape[0],)))
  noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
  t = t_B.reshape(-1, *([1] * (x0.ndim - 1)))
  x_t = (1.0 - t) * x0 + t * noise
  pred = velocity(x_t, t_B * TIME_SCALE, batch["text"])
  return jnp.mean(jnp.square(pred.astype(jnp.float32) - (noise - x0)))


def sigma_schedule(num_steps: int, shift: float) -> jnp.ndarray:
  """num_steps + 1 noise levels from 1 to 0, shifted toward high noise as Wan does."""
  s = jnp.linspace(1.0, 0.0, num_steps + 1)
  return shift * s / (1.0 + (shift - 1.0) * s)


def guided_euler_step(velocity: VelocityFn, x, text, sigma, sigma_next, guidance: float):
  """One Euler step with CFG: conditional and unconditional halves in one doubled batch."""
  b = x.shape[0]
  x2 = jnp.concatenate([x, x], axis=0)
  text2 = jnp.concatenate([text, jnp.zeros_like(text)], axis=0)
  t2 = jnp.full((2 * b,), sigma * TIME_SCALE, jnp.float32)
  v_cond, v_uncond = jnp.split(velocity(x2, t2, text2), 2, axis=0)
  v = v_uncond + guidance * (v_cond - v_uncond)
  return (x + (sigma_next - sigma) * v).astype(x.dtype)
