"""One WAN self-attention layer compiled for a v5p slice: the unit of the AOT studies and tests."""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from harness.aot.compile_step import compile_and_analyze
from harness.aot.topology import get_topology
from harness.attention import context_parallel_attention
from harness.mesh import make_mesh

ASYNC_A2A = ("--xla_tpu_enable_async_all_to_all=true",
             "--xla_tpu_overlap_compute_collective_tc=true")
# WAN 2.2 A14B (each expert) / Wan 2.1 14B: 40 heads x 128. Tokens at 81 frames: 720p and 480p.
TOKENS = {"720p": 75_600, "480p": 32_760}
TOPOLOGIES = {8: "v5p:2x2x2", 16: "v5p:2x2x4", 32: "v5p:2x4x4"}


@dataclasses.dataclass(frozen=True)
class Case:
  """One self-attention layer: q/k/v [1, tokens, heads, head_dim] over `context` chips of v5p."""
  tokens: int
  context: int
  chunks: int
  heads: int = 40
  head_dim: int = 128


def _attention(topology, case: Case, kernel: str):
  mesh = make_mesh(context=case.context, devices=topology.devices)
  spec = NamedSharding(mesh, P(("data", "fsdp"), "context"))
  # Token counts are padded to a multiple of the degree so the global arrays can be sharded.
  tokens = -(-case.tokens // case.context) * case.context
  x = jax.ShapeDtypeStruct((1, tokens, case.heads, case.head_dim), jnp.bfloat16, sharding=spec)
  pad = case.heads % case.context != 0
  fn = lambda q, k, v: context_parallel_attention(q, k, v, mesh=mesh, variant="ulysses",
                                                  num_chunks=case.chunks, kernel=kernel,
                                                  pad_heads=pad)
  return fn, (x, x, x)


def run_case(case: Case, kernel: str, flags=ASYNC_A2A) -> dict:
  """AOT report for one case, plus its wall-clock compile time."""
  topology = get_topology(TOPOLOGIES[case.context])
  fn, args = _attention(topology, case, kernel)
  start = time.perf_counter()
  report, _ = compile_and_analyze(fn, args, topology, flags)
  report["wall_s"] = time.perf_counter() - start
  return report


def max_chunks(heads: int, context: int) -> int:
  """Head units of `context` heads after padding: the valid chunk counts are 1..this."""
  return -(-heads // context)
