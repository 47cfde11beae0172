"""Compiled temp memory of one attention call (fwd+bwd), C head groups over single-shot.

    python experiments/bench_memory.py [--seq 1024] [--chunks 2 4] [--out F.json]

8 simulated CPU devices as data=2 x context=4; 16 heads x 64, batch 2, 'xla' kernel. Reads
`compiled.memory_analysis().temp_size_in_bytes` per device: what the chunked schedule holds live.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from harness import benchmark  # noqa: E402
from harness import mesh as mesh_lib  # noqa: E402
from harness.attention import context_parallel_attention  # noqa: E402
from harness.mesh import make_mesh  # noqa: E402


def temp_bytes(mesh, seq: int, num_chunks: int) -> int:
  spec = NamedSharding(mesh, P(mesh_lib.BATCH_AXES, mesh_lib.CONTEXT))
  arg = jax.ShapeDtypeStruct((2, seq, 16, 64), jnp.float32, sharding=spec)

  def loss(q, k, v):
    return jnp.sum(context_parallel_attention(q, k, v, mesh=mesh, num_chunks=num_chunks))

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(arg, arg, arg).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seq", type=int, default=1024)
  parser.add_argument("--chunks", type=int, nargs="+", default=[2, 4])
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  mesh = make_mesh(data=2, context=4)
  temps = {c: temp_bytes(mesh, args.seq, c) for c in [1, *args.chunks]}
  result = {"attention_temp_memory_ratio": {str(c): temps[c] / temps[1] for c in args.chunks},
            "attention_temp_bytes": {str(c): b for c, b in temps.items()},
            "memory_setup": f"batch 2 x {args.seq} tokens x 16 heads x 64, data=2 "
                                      "context=4, xla kernel, fwd+bwd"}
  return benchmark.emit(result, args.out)


if __name__ == "__main__":
  main()
