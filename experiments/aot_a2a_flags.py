"""Which libtpu flags let more than one Ulysses all-to-all run at a time: one layer, AOT for TPU.

    python experiments/aot_a2a_flags.py [--chunks 2] [--topology v5p:2x2x2] [--out F.json]

Compiles one self-attention layer (q/k/v projections, head-chunked Ulysses with splash, output
projection: WAN's 40 heads of 128, a CFG pair, 16,384 tokens) for a TPU topology on this machine,
once with gin/hardware/tpu_async_a2a.gin's flags and once more per candidate flag added to them.
For each it prints the predicted layer time, the share of all-to-all link time hidden under
attention kernels, the layout bytes and the most all-to-alls in flight at once in the scheduled
entry computation (a start not yet matched by its done; SparseCore-offloaded ones included).
"""
from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import NamedSharding, PartitionSpec as P

from harness import benchmark
from harness import mesh as mesh_lib
from harness.aot import compile_step, hlo_parse
from harness.aot import topology as topology_lib
from harness.attention import context_parallel_attention

HEADS, HEAD_DIM, TOKENS = 40, 128, 8 * 2048
ASYNC_A2A = ("--xla_tpu_enable_async_all_to_all=true",
             "--xla_tpu_overlap_compute_collective_tc=true")
# libtpu 0.0.42 has concurrency limits for all-gathers, all-reduces, reduce-scatters and
# collective-permutes (xla_max_concurrent_async_*), none for all-to-alls; these are the flags
# whose names bear on all-to-all scheduling.
CANDIDATES = (
    ("--xla_tpu_enable_latency_hiding_scheduler=true",),
    ("--xla_lhs_prioritize_async_depth_over_stall=true",),
    ("--xla_tpu_force_async_all_to_all=true",),
    ("--xla_tpu_enable_async_collective_fusion=true",
     "--xla_tpu_enable_async_collective_fusion_with_mosaic_custom_call=true"),
    ("--xla_tpu_enable_async_collective_fusion=true",
     "--xla_tpu_async_collective_fusion_fuse_multiple_collectives=true",
     "--xla_tpu_enable_async_collective_fusion_multiple_steps=true"),
    ("--xla_tpu_enable_sparse_core_collective_offload_dense_all_to_all=true",),
)


def most_in_flight(text: str) -> int:
  """The most all-to-alls started and not yet done at any point of the entry's schedule."""
  module = hlo_parse.parse_module(text)
  in_flight = most = 0
  for instr in module.computations[module.entry].instructions:
    if "all-to-all" not in instr.name and instr.opcode not in ("all-to-all-start",
                                                                "all-to-all-done"):
      continue
    if instr.opcode.endswith("-start"):
      in_flight += 1
      most = max(most, in_flight)
    elif instr.opcode.endswith("-done"):
      in_flight -= 1
  return most


def layer_and_args(topology: str, chunks: int):
  devices = topologies.get_topology_desc(platform="tpu", topology_name=topology).devices
  mesh = mesh_lib.make_mesh(context=len(devices), devices=devices)
  width = HEADS * HEAD_DIM
  x = jax.ShapeDtypeStruct((2, TOKENS, width), jnp.bfloat16,
                           sharding=NamedSharding(mesh, P(("data", "fsdp"), "context")))
  w = jax.ShapeDtypeStruct((width, width), jnp.bfloat16, sharding=NamedSharding(mesh, P()))

  def layer(x, wq, wk, wv, wo):
    q, k, v = ((x @ w).reshape(*x.shape[:2], HEADS, HEAD_DIM) for w in (wq, wk, wv))
    out = context_parallel_attention(q, k, v, mesh=mesh, num_chunks=chunks, kernel="splash")
    return out.reshape(x.shape) @ wo
  return layer, (x, w, w, w, w)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--chunks", type=int, default=2)
  parser.add_argument("--topology", default="v5p:2x2x2")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  topology = topology_lib.get_topology(args.topology)
  layer, abstract_args = layer_and_args(args.topology, args.chunks)
  rows = {}
  for extra in ((), *CANDIDATES):
    report, text = compile_step.compile_and_analyze(layer, abstract_args, topology,
                                                    ASYNC_A2A + extra)
    label = " ".join(f.lstrip("-") for f in extra) or "tpu_async_a2a.gin only"
    rows[label] = {"predicted_s": report["predicted_step_s"],
                   "hidden_under_attention_fraction": report["hidden_under_attention_fraction"],
                   "layout_bytes": report["layout_bytes"],
                   "most_all_to_alls_in_flight": most_in_flight(text)}
    print(f"{label}: {rows[label]}", flush=True)
  return benchmark.emit({"chunks": args.chunks, "topology": args.topology, "flags": rows},
                        args.out)


if __name__ == "__main__":
  main()
