"""Deterministic synthetic video latents and text embeddings, generated sharded on device.

Each sample belongs to one of a few classes; a class fixes both a smooth latent video and a
text embedding, so a model that reads the text can learn to denoise: the loss visibly falls.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from harness.mesh import batch_sharding

NUM_CLASSES = 8


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """Shapes of one global batch."""
  batch: int
  latent: tuple[int, int, int, int]  # frames, height, width, channels
  text_len: int
  text_dim: int
  seed: int = 0


def _class_latents(key, spec: DataSpec, class_B: jnp.ndarray) -> jnp.ndarray:
  """Smooth per-class waves over (frame, height, width), one phase per channel."""
  f, h, w, c = spec.latent
  kf, kp = jax.random.split(key)
  freqs_Kx3 = jax.random.uniform(kf, (NUM_CLASSES, 3), minval=0.3, maxval=1.5)
  phase_KxC = jax.random.uniform(kp, (NUM_CLASSES, c), maxval=6.28)
  ff, hh, ww = jnp.meshgrid(jnp.arange(f), jnp.arange(h), jnp.arange(w), indexing="ij")
  grid_3xFHW = jnp.stack([ff, hh, ww]).reshape(3, -1).astype(jnp.float32)
  arg_BxN = freqs_Kx3[class_B] @ grid_3xFHW
  waves_BxNxC = jnp.sin(arg_BxN[:, :, None] + phase_KxC[class_B][:, None, :])
  return waves_BxNxC.reshape(spec.batch, f, h, w, c)


def synthetic_batch(spec: DataSpec, step: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """The batch of a given step: the same step always gives the same batch."""
  base = jax.random.key(spec.seed)
  k_latent, k_text = jax.random.split(base)
  k_class, k_noise = jax.random.split(jax.random.fold_in(jax.random.fold_in(base, 1), step))
  class_B = jax.random.randint(k_class, (spec.batch,), 0, NUM_CLASSES)
  latents = _class_latents(k_latent, spec, class_B)
  latents = latents + 0.05 * jax.random.normal(k_noise, latents.shape)
  text_KxLxT = jax.random.normal(k_text, (NUM_CLASSES, spec.text_len, spec.text_dim))
  return {"latents": latents, "text": text_KxLxT[class_B]}


def batch_shardings(spec: DataSpec, mesh: Mesh) -> dict:
  return {"latents": batch_sharding(mesh, 5, spec.batch),
          "text": batch_sharding(mesh, 3, spec.batch)}


def make_batch_fn(spec: DataSpec, mesh: Mesh):
  """A jitted step → batch function whose outputs are already sharded on the mesh."""
  return jax.jit(lambda step: synthetic_batch(spec, step),
                 out_shardings=batch_shardings(spec, mesh))
