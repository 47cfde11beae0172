"""The WAN-style DiT: embeddings, a scanned stack of blocks, the output head."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from harness.model.block import Block, Runtime
from harness.model.config import DiTConfig
from harness.model.embed import Embeddings, Head
from harness.model.rope import rope_angles


class DiT(nnx.Module):
  """Predicts the flow-matching velocity of video latents given time and text."""

  def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = Embeddings(cfg, rngs)
    self.head = Head(cfg, rngs)

    # Stacked parameters (leading axis = layer) so that the forward is one lax.scan:
    # compile time does not grow with depth.
    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make_blocks(r: nnx.Rngs) -> Block:
      return Block(cfg, r)

    self.blocks = make_blocks(rngs)

  def __call__(self, latents_BxFxHxWxC, t_B, text_BxLxT, rt: Runtime):
    """Velocity [B, F, H, W, C] for latents at diffusion time t (in [0, 1000])."""
    f, h, w, _ = latents_BxFxHxWxC.shape[1:]
    pf, ph, pw = self.cfg.patch
    grid = (f // pf, h // ph, w // pw)
    dtype = jnp.dtype(self.cfg.dtype)
    x_BxSxD, e_BxD, e6_Bx6xD, text_BxLxD = self.embed(
        latents_BxFxHxWxC.astype(dtype), t_B, text_BxLxT.astype(dtype))
    x_BxSxD = rt.constrain(x_BxSxD.astype(dtype))
    angles_SxP = rope_angles(grid, self.cfg.head_dim)
    graphdef, stacked = nnx.split(self.blocks)

    def layer(x, layer_state):
      block = nnx.merge(graphdef, layer_state)
      return block(x, e6_Bx6xD, text_BxLxD, angles_SxP, rt), None

    if self.cfg.remat:
      layer = jax.checkpoint(layer, policy=jax.checkpoint_policies.nothing_saveable)
    x_BxSxD, _ = jax.lax.scan(layer, x_BxSxD, stacked)
    return self.head(x_BxSxD, e_BxD, grid).astype(jnp.float32)
