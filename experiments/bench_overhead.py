"""Harness-measured median step time over a bare loop of the same compiled train step.

    python experiments/bench_overhead.py [--steps 40] [--rounds 3] [--out bench_overhead.json]

Both loops run the quickstart's train step on 8 simulated CPU devices in one process, in
alternating rounds; the bare loop times `steps` back-to-back calls and divides. The ratio of
medians is the harness's own cost (metrics fetch, TensorBoard/jsonl writes, bookkeeping).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from harness import api, benchmark  # noqa: E402
from harness.execute import _step_logger  # noqa: E402
from harness.metrics import MetricsWriter  # noqa: E402
from harness.phases import PhaseContext, StopRequested, train  # noqa: E402
from harness.profiling import ProfilerWindow  # noqa: E402


def bare_round(program, setup, mesh, steps: int) -> list[float]:
  """Seconds per step of a plain loop over the compiled step, timed over blocks of steps."""
  compiled, state, batch_fn = benchmark.compile_train(program, setup, mesh)
  return benchmark.bare_step_times(compiled, state, batch_fn, steps)[0]


def harness_round(program, cfgs, mesh, steps: int, out_dir: str) -> list[float]:
  """Step times as the harness's train loop measures and records them."""
  writer = MetricsWriter(pathlib.Path(out_dir), enabled=True)
  window = ProfilerWindow(out_dir, enabled=False, start_step=0, num_steps=1)
  ctx = PhaseContext(cfgs.run, mesh, window, _step_logger(writer, 1, 1.0, "perf"),
                     StopRequested())
  try:
    phase = train(ctx, program, cfgs.setup, None)
  finally:
    writer.close()
  return phase.times_s


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--out", default=None, help="write the JSON result here too")
  args = parser.parse_args(argv)
  loaded = api.load(["quickstart.gin"], [f"run.steps={args.steps}", "run.progress=False",
                                         "profiler.enabled=False", "run.checkpoint_every=0"])
  cfgs, mesh, program = loaded.configs, loaded.mesh, loaded.program
  harness_s, bare_s = [], []
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.rounds):
      harness_s.append(harness_round(program, cfgs, mesh, args.steps, f"{tmp}/{r}"))
      bare_s.append(bare_round(program, cfgs.setup, mesh, args.steps))
  med = statistics.median
  ratio, spread = benchmark.ratio_summary(harness_s, bare_s)
  result = {
      "harness_over_bare": ratio,
      "harness_over_bare_spread": spread,
      "harness_median_step_s": [med(h) for h in harness_s],
      "bare_median_step_s": [med(b) for b in bare_s],
      "harness_mean_over_bare_mean": (statistics.mean(sum(harness_s, []))
                                      / statistics.mean(sum(bare_s, []))),
      "overhead_setup": {"bare_block_steps": benchmark.BLOCK, "steps": args.steps,
                         "rounds": args.rounds, "devices": jax.device_count()},
  }
  return benchmark.emit(result, args.out)


if __name__ == "__main__":
  main()
