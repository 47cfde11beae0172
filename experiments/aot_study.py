"""Predicted gain of head-chunked Ulysses over single-shot for one WAN self-attention layer.

  python experiments/aot_study.py --out experiments/results/aot_wan_attention.md
  python experiments/aot_study.py --full_model --out experiments/results/aot_wan_full_model.md

compiles the layer's attention (forward, bf16, q/k/v [1, tokens, 40, 128] sharded over 'context')
for each topology and chunk count with the async all-to-all flag set, and writes a markdown table;
--full_model compiles the whole eval step of the model instead.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  pylint: disable=wrong-import-position

from harness import api, gin_config  # noqa: E402  pylint: disable=wrong-import-position
from harness.aot import gain as gain_lib  # noqa: E402  pylint: disable=wrong-import-position
from harness.aot.cases import (  # noqa: E402  pylint: disable=wrong-import-position
    ASYNC_A2A, TOKENS, TOPOLOGIES, Case, max_chunks, run_case)
from harness.aot.entry import run_aot_mode  # noqa: E402  pylint: disable=wrong-import-position
from harness.aot.topology import get_topology  # noqa: E402  pylint: disable=wrong-import-position


def _row(label: str, report: dict, base: dict) -> str:
  """One table row; gains are relative to single-shot (C=1) with the same flags."""
  if report.get("error"):
    return f"| {label} | {report['error'][:80]} |" + " |" * 10
  a2a = report["collectives"].get("all-to-all", {"count": 0, "async_count": 0})
  pred, base_pred = report["predicted_step_s"], base["predicted_step_s"]
  overlap_gain = (base["exposed_comm_s"] - report["exposed_comm_s"]) / base_pred
  ms = lambda s: f"{round(s * 1e3, 2) + 0.0:.2f}"  # + 0.0 turns -0.0 into 0.0
  return (f"| {label} | {a2a['async_count']}/{a2a['count']} | {ms(report['comm_s'])} | "
          f"{ms(report['compute_s'])} | {ms(report['compute_s'] - base['compute_s'])} | "
          f"{ms(report['exposed_comm_s'])} | {report['hidden_fraction'] * 100:.0f} % | "
          f"{ms(pred)} | {(base_pred - pred) / base_pred * 100:+.2f} % | "
          f"{overlap_gain * 100:+.2f} % | {report['hbm_bytes'] / 2**30:.1f} | "
          f"{report['wall_s']:.0f} |")


def study(resolutions, contexts, kernel: str, chunk_limit: int) -> str:
  """Markdown with one table per (resolution, context degree)."""
  lines = []
  for resolution in resolutions:
    for context in contexts:
      top = min(max_chunks(40, context), chunk_limit)
      lines += [f"### {resolution} ({TOKENS[resolution]:,} tokens), cp={context} on "
                f"{TOPOLOGIES[context]}, kernel={kernel}", "",
                "| C | async a2a | comm ms | compute ms | Δ compute ms | exposed ms | hidden | "
                "predicted ms | gain vs C=1 | overlap-only gain | HBM GiB | compile s |",
                "|" + "---|" * 12]
      single = run_case(Case(TOKENS[resolution], context, 1), kernel)
      default = run_case(Case(TOKENS[resolution], context, 1), kernel, flags=())
      lines.append(_row("1, default flags", default, single))
      reports = {1: single}
      for chunks in range(1, top + 1):
        if chunks not in reports:
          reports[chunks] = run_case(Case(TOKENS[resolution], context, chunks), kernel)
        lines.append(_row(str(chunks), reports[chunks], single))
        print(lines[-1], file=sys.stderr, flush=True)
      lines += [""] + gain_sentences(reports)
  return "\n".join(lines)


def gain_sentences(reports: dict[int, dict]) -> list[str]:
  """One line per C >= 2: the predicted gain over C=1, decomposed and bounded (harness.aot.gain)."""
  gains = gain_lib.gains_by_chunks(reports)
  return [f"- {g.sentence(f'C={c}')}" for c, g in gains.items()] + ([""] if gains else [])


FULL_MODEL_FILES = ("models/wan2_2_a14b.gin", "video/720p.gin", "attention/ulysses.gin",
                    "hardware/tpu_async_a2a.gin")


def run_full_model(topology: str, chunks: int, kernel: str, out_dir: str) -> dict:
  """AOT report of the full 40-layer WAN 2.2 A14B eval (guided denoising) step at 720p."""
  gin_config.clear()
  start = time.perf_counter()
  report = run_aot_mode(api.load(FULL_MODEL_FILES, [
      "run.mode = 'aot'", f"run.output_dir = '{out_dir}'", f"run.run_name = 'c{chunks}'",
      "run.batch_size = 1", f"aot.topology = '{topology}'", "aot.step = 'eval'",
      f"attention.kernel = '{kernel}'", f"attention.num_chunks = {chunks}"], abstract=True))
  report["wall_s"] = time.perf_counter() - start
  gin_config.clear()
  return report


def full_model_study(topologies, chunk_counts, kernel: str) -> str:
  """Markdown with one table per topology for the full model's eval step."""
  lines, out_dir = [], tempfile.mkdtemp(prefix="aot_full_model_")
  for topology in topologies:
    context = get_topology(topology).num_chips
    lines += [f"### WAN 2.2 A14B eval step, 720p, 40 layers, CFG, {topology} (cp={context}), "
              f"kernel={kernel}", "",
              "| C | async a2a | comm ms | compute ms | Δ compute ms | exposed ms | hidden | "
              "predicted ms | gain vs C=1 | overlap-only gain | HBM GiB | compile s |",
              "|" + "---|" * 12]
    base, reports = None, {}
    for chunks in [c for c in chunk_counts if c <= max_chunks(40, context)]:
      report = reports[chunks] = run_full_model(topology, chunks, kernel, out_dir)
      base = base or report
      lines.append(_row(str(chunks), report, base))
      print(lines[-1], file=sys.stderr, flush=True)
    lines += [""] + gain_sentences(reports)
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="experiments/results/aot_wan_attention.md")
  parser.add_argument("--kernel", default="splash")
  parser.add_argument("--resolutions", default="720p,480p")
  parser.add_argument("--contexts", default="8,16,32")
  parser.add_argument("--max_chunks", type=int, default=5)
  parser.add_argument("--full_model", action="store_true",
                      help="the 40-layer eval step (gin: " + ", ".join(FULL_MODEL_FILES) + ")")
  parser.add_argument("--topologies", default="v5p-8,v5p-16", help="with --full_model")
  parser.add_argument("--chunks", default="1,2,5,8", help="with --full_model")
  args = parser.parse_args(argv)
  if args.full_model:
    body = full_model_study(args.topologies.split(","), [int(c) for c in args.chunks.split(",")],
                            args.kernel)
  else:
    body = study(args.resolutions.split(","), [int(c) for c in args.contexts.split(",")],
                 args.kernel, args.max_chunks)
  header = (f"# Predicted gain of head-chunked Ulysses (AOT, no TPU)\n\nGenerated "
            f"{datetime.date.today()} by `python experiments/aot_study.py "
            f"{' '.join(argv or sys.argv[1:])}` with jax {jax.__version__}; flags "
            f"{' '.join(ASYNC_A2A)}. Model and assumptions: docs/aot.md.\n\n")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    f.write(header + body + "\n")
  print(header + body)


if __name__ == "__main__":
  main()
