"""Analytic model FLOPs and a per-device memory estimate (no compilation, no allocation)."""
from __future__ import annotations

import math

import jax
import numpy as np

from harness.model import DiTConfig, VideoConfig


def forward_flops_per_sample(cfg: DiTConfig, video: VideoConfig) -> float:
  """Matmul FLOPs of one forward pass on one video (2 per multiply-add)."""
  s, l, d, f = cfg.num_tokens(video), cfg.text_len, cfg.dim, cfg.ffn_dim
  per_layer = (
      2 * s * d * d * 4          # self-attention q, k, v, o
      + 2 * s * d * d * 2        # cross-attention q, o
      + 2 * l * d * d * 2        # cross-attention k, v of the text
      + 2 * s * d * f * 2        # feed-forward
      + 2 * 2 * s * s * d        # self-attention scores and values
      + 2 * 2 * s * l * d)       # cross-attention scores and values
  embed = (2 * s * cfg.in_channels * cfg.patch_volume * d
           + 2 * l * (cfg.text_dim * d + d * d)
           + 2 * (cfg.freq_dim * d + d * d + d * 6 * d)
           + 2 * s * d * cfg.out_channels * cfg.patch_volume)
  return float(cfg.num_layers * per_layer + embed)


def step_flops(cfg: DiTConfig, video: VideoConfig, batch: int, mode: str) -> float:
  """Model FLOPs of one train step (fwd + bwd = 3 × fwd) or one CFG denoising step (2 × batch)."""
  fwd = forward_flops_per_sample(cfg, video)
  return 3.0 * fwd * batch if mode == "train" else 2.0 * fwd * batch


def _per_device_bytes(abstract, shardings, mesh) -> float:
  total = 0.0
  for leaf, sh in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
    split = 1
    for entry in sh.spec:
      for axis in (entry if isinstance(entry, tuple) else (entry,)):
        if axis is not None:
          split *= mesh.shape[axis]
    total += leaf.size * np.dtype(leaf.dtype).itemsize / split
  return total


def memory_estimate(cfg: DiTConfig, video: VideoConfig, batch: int, mode: str,
                    abstract_params, param_shardings, mesh) -> dict[str, float]:
  """Rough per-device bytes: parameter state plus remat-saved layer inputs plus one layer."""
  params = _per_device_bytes(abstract_params, param_shardings, mesh)
  state = params * (4 if mode == "train" else 1)  # + gradients + two Adam moments
  batch_par = mesh.shape["data"] * mesh.shape["fsdp"]
  b = math.ceil(batch * (1 if mode == "train" else 2) / batch_par)
  s_local = math.ceil(cfg.num_tokens(video) / mesh.shape["context"])
  width = np.dtype(cfg.dtype).itemsize
  saved = cfg.num_layers * b * s_local * cfg.dim * width if mode == "train" else 0
  layer = b * s_local * (8 * cfg.dim + 2 * cfg.ffn_dim) * width
  return {"params_bytes": params, "state_bytes": state, "activation_bytes": saved + layer,
          "total_bytes": state + saved + layer}
