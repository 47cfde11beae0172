"""Head-chunked over single-shot Ulysses: median train-step time of the tiny DiT, fwd+bwd.

    python experiments/bench_chunks.py [--chunks 2 4] [--steps 22] [--rounds 3] [--packed_qkv]
        [--out F.json]

8 simulated CPU devices as data=2 x context=4 (16 heads → 4 per device, so 1, 2 or 4 groups).
Every chunk count is compiled once in one process; rounds alternate between them so that load
on the shared machine hits all alike. The ratio is of pooled medians; the spread is the min–max
of per-round ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from harness import api, benchmark, gin_config  # noqa: E402

BINDINGS = ["mesh.data=2", "mesh.context=4", "run.batch_size=2", "profiler.enabled=False"]


def build(num_chunks: int, packed_qkv: bool):
  gin_config.clear()
  loaded = api.load(["quickstart.gin"], [*BINDINGS, f"attention.num_chunks={num_chunks}",
                                         f"attention.packed_qkv={packed_qkv}"])
  return benchmark.compile_train(loaded.program, loaded.configs.setup, loaded.mesh)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--chunks", type=int, nargs="+", default=[2, 4])
  parser.add_argument("--steps", type=int, default=22)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--packed_qkv", action="store_true",
                      help="one all-to-all for q, k, v per group (both sides of the ratio)")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  counts = [1, *args.chunks]
  built = {c: build(c, args.packed_qkv) for c in counts}
  times = {c: [] for c in counts}
  for _ in range(args.rounds):
    for c in counts:
      compiled, state, batch_fn = built[c]
      step_times, state = benchmark.bare_step_times(compiled, state, batch_fn, args.steps)
      built[c] = (compiled, state, batch_fn)
      times[c].append(step_times)
  result = {"chunked_over_single": {}, "chunked_over_single_spread": {},
            "chunks_median_step_s": {str(c): statistics.median(sum(times[c], []))
                                     for c in counts},
            "chunks_setup": {"steps": args.steps, "rounds": args.rounds,
                             "devices": jax.device_count(), "mesh": "data=2 context=4",
                             "packed_qkv": args.packed_qkv,
                             "model": "tiny DiT, fwd+bwd+AdamW"}}
  for c in args.chunks:
    ratio, spread = benchmark.ratio_summary(times[c], times[1])
    result["chunked_over_single"][str(c)] = ratio
    result["chunked_over_single_spread"][str(c)] = spread
  return benchmark.emit(result, args.out)


if __name__ == "__main__":
  main()
