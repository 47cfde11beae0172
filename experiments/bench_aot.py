"""AOT figures of the real WAN 2.2 A14B eval step on v5p:2x2x2 (8 chips, cp=8), on this CPU host.

    python experiments/bench_aot.py [--chunks 1 2 4 5] [--pipelined 2 4 5] [--out F.json]

Each case compiles the full 40-layer denoising step (720p, CFG, splash attention, async
all-to-all flags) for the TPU topology and reads the schedule analysis: compile time, the
hidden share of all-to-all link time (synchronous all-to-alls count as exposed), the share hidden
under attention kernels, the predicted step's bounds, and each C's predicted gain over C=1 with its
bounds and verdict (harness.aot.gain). `--pipelined` adds the chunk counts compiled with
attention.pipelined_projections=True, with the same figures (suffix `_pipelined`) and their gains
over the same single-shot step. The compile-time ratio
C=8 / C=1 is taken on v5p-8 (v5p:2x2x1, cp=4), where 40 heads can form 8 groups.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]  # aot_pipelined_study, and the harness

from harness import benchmark  # noqa: E402
from harness.aot import gain  # noqa: E402
from aot_pipelined_study import run_case  # noqa: E402  pylint: disable=wrong-import-position


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 5])
  parser.add_argument("--pipelined", type=int, nargs="*", default=[2, 4, 5])
  parser.add_argument("--resolution", default="720p", choices=["480p", "720p"])
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  case = lambda c, p: run_case("eval", args.resolution, None, c, "splash", p)
  plain = {c: case(c, False) for c in args.chunks}
  piped = {c: case(c, True) for c in args.pipelined}
  result = {
      "aot_compile_time_s": _per_c(plain, "compile_time_s"),
      "aot_hidden_fraction": _per_c(plain, "a2a_hidden_fraction"),
      "aot_predicted_step_s": _per_c(plain, "predicted_step_s"),
      "aot_hidden_fraction_pipelined": _per_c(piped, "a2a_hidden_fraction"),
      "aot_predicted_step_s_pipelined": _per_c(piped, "predicted_step_s"),
      "aot_setup": {"model": "wan2_2_a14b eval step, 40 layers, CFG", "resolution": args.resolution,
                    "topology": "v5p:2x2x2", "kernel": "splash", "flags": "async all-to-all"},
  }
  # Compile time C=8 / C=1 on v5p-8 (4 chips, cp=4): at cp=8, 40 heads allow at most 5 groups.
  small = {c: run_case("eval", args.resolution, None, c, "splash", False,
                       topology_name="v5p:2x2x1") for c in (1, 8)}
  result["aot_compile_time_s_v5p8"] = _per_c(small, "compile_time_s")
  result["aot_compile_c8_over_c1"] = small[8]["compile_time_s"] / small[1]["compile_time_s"]
  result.update(_attribution(plain, plain.get(1), ""))
  # Per-group projections against the same single-shot step (C=1 has no groups to project).
  result.update(_attribution(piped, plain.get(1), "_pipelined"))
  chunked = [c for c in (2, 4, 5) if c in plain]
  result["aot_hidden_fraction_chunked"] = {str(c): plain[c].get("a2a_hidden_fraction")
                                           for c in chunked}
  return benchmark.emit(result, args.out)


def _per_c(reports: dict, key: str) -> dict:
  return {str(c): r.get(key) for c, r in reports.items()}


def _attribution(reports: dict, single_shot: dict | None, suffix: str) -> dict:
  """Layout bytes, hidden share, bounds and the predicted gain of each C over single-shot
  (no gains when C=1 was not compiled)."""
  gains = gain.gains_by_chunks({**reports, 1: single_shot})
  return {
      f"aot_hidden_under_attention_fraction{suffix}": _per_c(reports,
                                                            "hidden_under_attention_fraction"),
      f"aot_layout_bytes{suffix}": _per_c(reports, "layout_bytes"),
      f"aot_predicted_step_s_bounds{suffix}": _per_c(reports, "predicted_step_s_bounds"),
      f"aot_predicted_gain{suffix}": {str(c): g.total for c, g in gains.items()},
      f"aot_gain_bounds{suffix}": {str(c): list(g.bounds) for c, g in gains.items()},
      f"aot_gain_verdict{suffix}": {str(c): g.verdict + (f" ({g.decided_by})" if g.decided_by
                                                         else "") for c, g in gains.items()},
      f"aot_gain_sentences{suffix}": [g.sentence(f"C={c}") for c, g in gains.items()],
  }


if __name__ == "__main__":
  main()
