"""AOT figures of the real WAN 2.2 A14B eval step on v5p:2x2x2 (8 chips, cp=8), on this CPU host.

    python experiments/bench_aot.py [--chunks 1 2 4 5 8] [--resolution 720p] [--out F.json]

For each chunk count: compile the full 40-layer denoising step with splash attention and the
async all-to-all flag set (gin/hardware/tpu_async_a2a.gin), then read the schedule analysis.
Reports compile time C=8 / C=1 and the predicted hidden fraction per C: hidden collective time /
min(collective, compute) as aot.json defines it; all-to-alls are all but one of the step's
collectives (one all-gather runs once), so it is the all-to-alls' hidden share.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gin  # noqa: E402

from harness import config, run  # noqa: E402
from harness.aot.entry import run_aot_mode  # noqa: E402


def aot_report(num_chunks: int, resolution: str, out_dir: str) -> dict:
  gin.clear_config()
  config.parse(["models/wan2_2_a14b.gin", f"video/{resolution}.gin", "hardware/tpu_async_a2a.gin"],
               ["run.mode='aot'", "aot.step='eval'", "aot.topology='v5p:2x2x2'",
                "mesh.context=8", "attention.kernel='splash'", "attention.pad_heads=True",
                f"attention.num_chunks={num_chunks}", f"run.output_dir={out_dir!r}",
                f"run.run_name='c{num_chunks}'"])
  return run_aot_mode(run.load_configs(), run.build_mesh)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 5, 8])
  parser.add_argument("--resolution", default="720p", choices=["480p", "720p"])
  parser.add_argument("--out", default=None)
  parser.add_argument("--out_dir", default="results/bench/aot_runs")
  args = parser.parse_args(argv)
  reports = {c: aot_report(c, args.resolution, args.out_dir) for c in args.chunks}
  result = {
      "aot_compile_time_s": {str(c): r["compile_time_s"] for c, r in reports.items()},
      "aot_hidden_fraction": {str(c): r.get("hidden_fraction") for c, r in reports.items()},
      "aot_predicted_step_s": {str(c): r.get("predicted_step_s") for c, r in reports.items()},
      "aot_setup": {"model": "wan2_2_a14b eval step (40 layers)", "resolution": args.resolution,
                    "topology": "v5p:2x2x2", "kernel": "splash", "flags": "tpu_async_a2a.gin"},
  }
  if 1 in reports and 8 in reports:
    result["aot_compile_c8_over_c1"] = (reports[8]["compile_time_s"]
                                        / reports[1]["compile_time_s"])
  chunked = [result["aot_hidden_fraction"][str(c)] for c in args.chunks if c in (2, 4, 5)]
  if chunked and all(f is not None for f in chunked):
    result["aot_hidden_fraction_chunked"] = {str(c): result["aot_hidden_fraction"][str(c)]
                                             for c in args.chunks if c in (2, 4, 5)}
  print(json.dumps(result, indent=2))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
