"""Types shared across harness/attention; a leaf module that imports nothing from the package.

Shape letters: B batch, S query sequence, T key/value sequence, H q heads, K kv heads, D head_dim.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import jax
from jax.sharding import Mesh

Range = tuple[int, int]

# attend(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len) -> out_BxSxHxD on one device's shards.
AttendFn = Callable[[jax.Array, jax.Array, jax.Array, object], jax.Array]


@dataclasses.dataclass(frozen=True)
class KernelOptions:
  """Block sizes of the blockwise and splash kernels (splash backward sizes default to forward)."""
  block_q: int = 512
  block_kv: int = 512
  block_kv_compute: int | None = None
  block_q_dkv: int | None = None
  block_kv_dkv: int | None = None
  block_kv_dkv_compute: int | None = None
  # Splash's fused dq/dk/dv kernel keeps one dq partial per KV block: 14 GiB of temporaries at
  # 75,600 tokens x 5 heads x 128 (bf16) against 0.7 GiB for the separate dq kernel.
  use_fused_bwd_kernel: bool = False
  # Runs Pallas kernels (splash) in Python on any platform: slow, for numerics tests on CPU.
  interpret: bool = False


# kernel(q_BxSxHxD, k_BxTxKxD, v_BxTxKxD, kv_valid_len, options) -> out_BxSxHxD.
KernelFn = Callable[[jax.Array, jax.Array, jax.Array, object, KernelOptions], jax.Array]
# The same with the float32 log-sum-exp: -> (out_BxSxHxD, lse_BxHxS).
LseKernelFn = Callable[[jax.Array, jax.Array, jax.Array, object, KernelOptions],
                       tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
  """One head group: q heads [start, stop) of the padded heads and the kv heads it sends."""
  start: int
  stop: int
  kv_index: tuple[int, ...]  # kv head for each slot of the slab; degree * kv_per_device slots.
  kv_per_device: int

  @property
  def group(self) -> int:
    """How many consecutive q heads on a device share one kv slot."""
    return (self.stop - self.start) // len(self.kv_index)


@dataclasses.dataclass(frozen=True)
class HeadPlan:
  """How `heads` q heads and `kv_heads` kv heads travel through a Ulysses all-to-all of `degree`."""
  heads: int
  kv_heads: int
  degree: int
  padded_heads: int
  chunks: tuple[ChunkPlan, ...]

  @property
  def ranges(self) -> tuple[Range, ...]:
    return tuple((c.start, c.stop) for c in self.chunks)

  @property
  def kv_replicated(self) -> bool:
    """Whether any kv head is sent more than once (GQA/MQA with groups split across devices)."""
    return any(len(set(c.kv_index)) != len(c.kv_index) for c in self.chunks)


@dataclasses.dataclass(frozen=True)
class AttentionPlan:
  """A validated attention configuration for `heads` q and `kv_heads` kv heads on mesh.context."""
  variant: str
  kernel: str
  heads: int
  kv_heads: int
  context: int
  num_chunks: int = 1
  ulysses_degree: int | None = None
  packed_qkv: bool = False
  pad_heads: bool = False
  chunk_sizing: str = "larger_first"
  head_plan: HeadPlan | None = None  # the Ulysses head groups of chunked variants, else None


class VariantFn(Protocol):
  """The one signature of every attention variant: global arrays in, out_BxSxHxD global."""

  def __call__(self, q_BxSxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, *,
               mesh: Mesh, plan: AttentionPlan, kv_valid_len,
               kernel_options: KernelOptions | None) -> jax.Array:
    ...


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ProjectionWeights:
  """Self-attention weights as pipelined projections take them.

  w*: Linear kernels [dim_in, dim_out]; b*: biases [dim_out]; norm_q, norm_k: RMSNorm scales
  [dim]. Heads are the major part of every projected width.
  """
  wq: jax.Array
  bq: jax.Array
  wk: jax.Array
  bk: jax.Array
  wv: jax.Array
  bv: jax.Array
  wo: jax.Array
  bo: jax.Array
  norm_q: jax.Array
  norm_k: jax.Array
