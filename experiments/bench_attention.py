"""Head-chunked over single-shot Ulysses attention alone: median fwd+bwd time, 8 simulated devices.

    python experiments/bench_attention.py [--seq 32] [--chunks 2 4] [--rounds 5] [--out F.json]

Default shape is the quickstart's attention: batch 2, 32 tokens, 16 heads x 16, on data=2 x
context=4 (4 heads a device, so 1, 2 or 4 groups). All chunk counts are compiled first; then
rounds alternate between them so that load on the shared machine hits all alike. The ratio is of
pooled medians; the spread is the min-max of per-round ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from harness import benchmark  # noqa: E402
from harness import mesh as mesh_lib  # noqa: E402
from harness.attention import context_parallel_attention  # noqa: E402
from harness.mesh import make_mesh  # noqa: E402

BLOCK = 4  # calls per timed block


def build(mesh, args, num_chunks: int):
  """A compiled fwd+bwd of one attention call and its sharded inputs."""
  spec = NamedSharding(mesh, P(mesh_lib.BATCH_AXES, mesh_lib.CONTEXT))
  shape = (args.batch, args.seq, args.heads, args.head_dim)
  keys = jax.random.split(jax.random.key(0), 4)
  inputs = [jax.device_put(jax.random.normal(key, shape, jnp.float32), spec) for key in keys]

  def loss(q, k, v, cotangent):
    out = context_parallel_attention(q, k, v, mesh=mesh, num_chunks=num_chunks,
                                     kernel=args.kernel, packed_qkv=args.packed_qkv)
    return jnp.sum(out * cotangent)

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
  return step.lower(*inputs).compile(), inputs


def block_times(compiled, inputs, blocks: int) -> list[float]:
  jax.block_until_ready(compiled(*inputs))
  times = []
  for _ in range(blocks):
    start = time.perf_counter()
    for _ in range(BLOCK):
      result = compiled(*inputs)
    jax.block_until_ready(result)
    times.append((time.perf_counter() - start) / BLOCK)
  return times


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seq", type=int, default=32)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--heads", type=int, default=16)
  parser.add_argument("--head-dim", type=int, default=16)
  parser.add_argument("--data", type=int, default=2)
  parser.add_argument("--chunks", type=int, nargs="+", default=[2, 4])
  parser.add_argument("--kernel", default="xla")
  parser.add_argument("--packed-qkv", action="store_true")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--blocks", type=int, default=5)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  mesh = make_mesh(data=args.data, context=-1)
  counts = [1, *args.chunks]
  built = {c: build(mesh, args, c) for c in counts}
  times = {c: [] for c in counts}
  for _ in range(args.rounds):
    for c in counts:
      times[c].append(block_times(*built[c], args.blocks))
  result = {
      "shape": {"batch": args.batch, "seq": args.seq, "heads": args.heads,
                "head_dim": args.head_dim},
      "mesh": {axis: int(size) for axis, size in mesh.shape.items()},
      "kernel": args.kernel, "packed_qkv": args.packed_qkv,
      "median_step_s": {str(c): statistics.median(sum(times[c], [])) for c in counts},
      "chunked_over_single": {}, "chunked_over_single_spread": {},
      "rounds": args.rounds, "calls_per_round": args.blocks * BLOCK, "target": 1.05,
  }
  for c in args.chunks:
    ratio, spread = benchmark.ratio_summary(times[c], times[1])
    result["chunked_over_single"][str(c)] = ratio
    result["chunked_over_single_spread"][str(c)] = spread
  print(json.dumps(result, indent=2))
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
