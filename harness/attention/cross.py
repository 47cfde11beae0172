"""Cross-attention to text: q stays sequence-sharded, text K/V are replicated; no all-to-all."""
from __future__ import annotations

import logging

import jax
from jax.sharding import Mesh

from harness import mesh as mesh_lib
from harness.attention import kernels
from harness.attention import layout
from harness.attention import padding
from harness.attention.types import KernelOptions
from harness.errors import UserError


def cross_attention(q_BxSxHxD: jax.Array, k_BxLxKxD: jax.Array, v_BxLxKxD: jax.Array, *,
                    mesh: Mesh, kernel: str = "xla", kv_valid_len=None,
                    kernel_options: KernelOptions | None = None) -> jax.Array:
  """Each device attends its sequence block of q to the whole text; returns [B, S, H, D]."""
  if kernel not in kernels.KERNELS:
    raise UserError(f"attention.kernel={kernel!r} is unknown; valid choices: "
                    f"{', '.join(kernels.KERNELS)}")
  layout.check_batch(q_BxSxHxD.shape[0], mesh)
  context = mesh.shape[mesh_lib.CONTEXT]
  logging.info("cross attention kernel=%s: q %s sequence-sharded over context=%d, kv %s replicated",
               kernel, q_BxSxHxD.shape, context, k_BxLxKxD.shape)
  seq = q_BxSxHxD.shape[1]
  q_BxSxHxD = padding.pad_seq(q_BxSxHxD, context)
  attend = kernels.attend_fn(kernel, kernel_options)
  out = layout.run_sharded(attend, mesh, mesh_lib.CONTEXT, None, q_BxSxHxD, k_BxLxKxD, v_BxLxKxD,
                           kv_valid_len, kernel)
  return out[:, :seq]
