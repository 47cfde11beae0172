"""Calibrates the AOT model against published TPU measurements; writes calibration.json and .md.

  python -m launch --experiment experiments/calibration.gin --backend aot
  python experiments/calibration.py results/calib [--copy_to experiments/results]

Model: a run's predicted step is split into the attention kernels (Pallas, priced at MXU peak) and
the rest. Calibration divides the attention time by an efficiency per TPU generation (<= 1) and
prices layout ops either by XLA's estimates or at their HBM roofline. Each generation's efficiency is
fitted on its fit rows (calibration_points.POINTS, `fit=True`); the layout model is the one with the
smaller worst error on the held-out rows. Predicted values are compared as measured / predicted.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]  # calibration_points, and the harness for reanalyze
from calibration_points import POINTS, Point  # noqa: E402  pylint: disable=wrong-import-position

LAYOUTS = ("estimate", "roofline")
BAND = (0.8, 1.25)


@dataclasses.dataclass(frozen=True)
class Prediction:
  """What one aot run predicts, split into the parts calibration rescales."""
  step_s: dict[str, float]  # by layout model, attention at MXU peak, ICI at the published rate
  attention_s: float        # attention kernels' share of the step at MXU peak


def read_prediction(aot: dict, run: str) -> Prediction:
  """The nominal and roofline-layout steps and the attention time of one aot.json."""
  if aot.get("fits_hbm") is False or aot.get("predicted_step_s") is None:
    raise ValueError(f"{run}: no prediction ({aot.get('error') or 'fits_hbm false'})")
  for key in ("compute_by_kind_s", "bound_scenarios"):
    if key not in aot:
      raise ValueError(f"{run}: aot.json has no {key}; rerun the sweep with the attribution")
  roofline = [s for s in aot["bound_scenarios"]
              if (s["layout"], s["attention"], s["ici"]) == ("lo", "lo", "lo")]
  return Prediction({"estimate": aot["predicted_step_s"],
                     "roofline": roofline[0]["predicted_step_s"]},
                    aot["compute_by_kind_s"].get("attention", 0.0))


def predicted(pred: Prediction, efficiency: float, layout: str) -> float:
  """The step with attention kernels at `efficiency` of peak (their slowdown adds to the step)."""
  return pred.step_s[layout] + pred.attention_s * (1.0 / efficiency - 1.0)


def fit_one(pred: Prediction, measured_s: float, layout: str) -> float:
  """The efficiency that makes the prediction equal the measurement, at most 1."""
  rest = pred.step_s[layout] - pred.attention_s
  need = measured_s - rest
  if pred.attention_s <= 0 or need <= pred.attention_s:
    return 1.0  # already as slow as measured (or slower) at peak
  return pred.attention_s / need


def fit(preds: dict[str, Prediction], layout: str) -> dict[str, float]:
  """Efficiency per generation: geometric mean of its fit rows' exact fits."""
  by_generation: dict[str, list[float]] = {}
  for p in POINTS:
    if p.fit and isinstance(preds[p.run], Prediction):
      by_generation.setdefault(p.generation, []).append(
          fit_one(preds[p.run], p.measured_s / p.scale, layout))
  return {g: math.exp(sum(map(math.log, v)) / len(v)) for g, v in by_generation.items()}


def _row(p: Point, pred: Prediction | str, efficiency: dict[str, float], layout: str) -> dict:
  row = {"name": p.name, "run": p.run, "generation": p.generation, "config": p.config,
         "role": "fit" if p.fit else "held out",
         "source": {"url": p.url, "quote": p.quote, "derivation": p.derivation},
         "measured_s": p.measured_s}
  if not isinstance(pred, Prediction):
    return {**row, "predicted_s": None, "ratio": None, "within_band": False, "missing": pred}
  eff = efficiency.get(p.generation, 1.0)
  calibrated = p.scale * predicted(pred, eff, layout)
  nominal = p.scale * pred.step_s["estimate"]
  ratio = p.measured_s / calibrated
  return {**row, "predicted_s": calibrated,
          "predicted_uncalibrated_s": nominal, "ratio": ratio,
          "ratio_uncalibrated": p.measured_s / nominal, "attention_efficiency": eff,
          "row_efficiency": fit_one(pred, p.measured_s / p.scale, layout),
          "within_band": BAND[0] <= ratio <= BAND[1]}


def _worst_held_out(rows: list[dict]) -> float:
  held = [abs(math.log(r["ratio"])) for r in rows if r["role"] == "held out" and r["ratio"]]
  return max(held) if held else 0.0


def calibrate(preds: dict[str, Prediction]) -> dict:
  """Fits both layout models, keeps the one with the smaller worst held-out error."""
  candidates = {}
  for layout in LAYOUTS:
    efficiency = fit(preds, layout)
    rows = [_row(p, preds[p.run], efficiency, layout) for p in POINTS]
    candidates[layout] = {"attention_efficiency": efficiency, "rows": rows,
                          "worst_held_out_log_ratio": _worst_held_out(rows)}
  best = min(LAYOUTS, key=lambda l: candidates[l]["worst_held_out_log_ratio"])
  rows = candidates[best]["rows"]
  held = [r for r in rows if r["role"] == "held out" and r["ratio"]]
  return {
      "model": __doc__.split("\n\n")[2].replace("\n", " "),
      "band": list(BAND),
      "fit_subset": [p.name for p in POINTS if p.fit],
      "layout_model": best,
      "attention_efficiency": candidates[best]["attention_efficiency"],
      "held_out_error": {
          "mean_abs_pct": 100 * sum(abs(r["ratio"] - 1) for r in held) / max(len(held), 1),
          "max_abs_pct": 100 * max((abs(r["ratio"] - 1) for r in held), default=0.0)},
      "rows": rows,
      "candidates": {l: {k: v for k, v in c.items() if k != "rows"}
                     for l, c in candidates.items()},
      "closing_note": closing_note(rows),
  }


def closing_note(rows: list[dict]) -> str:
  """Which rows miss the band, and why."""
  missed = [r for r in rows if not r["within_band"]]
  if not missed:
    return f"every row lies within measured/predicted in [{BAND[0]}, {BAND[1]}]"
  parts = []
  for r in missed:
    if r["ratio"] is None:
      parts.append(f"{r['name']}: no prediction ({r['missing']})")
      continue
    why = ("predicted slower than measured even with attention at MXU peak (efficiency capped "
           "at 1)" if r["attention_efficiency"] >= 1 and r["ratio"] < BAND[0] else
           "the generation's efficiency fitted on its fit row does not carry over to this setup")
    parts.append(f"{r['name']} (ratio {r['ratio']:.2f}): {why}")
  return "rows outside the band: " + "; ".join(parts)


def to_markdown(result: dict) -> str:
  """calibration.md: parameters, one row per measurement, sources, closing note."""
  eff = ", ".join(f"{g} {v:.3f}" for g, v in sorted(result["attention_efficiency"].items()))
  lines = ["# AOT calibration against published TPU measurements", "",
           result["model"], "",
           f"Layout model: **{result['layout_model']}**; attention-kernel efficiency (fraction of "
           f"MXU peak): {eff}. Fit on: {', '.join(result['fit_subset'])}. Held-out error: mean "
           f"{result['held_out_error']['mean_abs_pct']:.1f} %, worst "
           f"{result['held_out_error']['max_abs_pct']:.1f} %.", "",
           "| row | role | config | measured s | predicted s | measured/predicted | "
           "uncalibrated predicted s | measured/uncalibrated |", "|---|---|---|---|---|---|---|---|"]
  for r in result["rows"]:
    figures = ("— | — | — | —" if r["ratio"] is None else
               f"{r['predicted_s']:.2f} | {r['ratio']:.2f} | {r['predicted_uncalibrated_s']:.2f} | "
               f"{r['ratio_uncalibrated']:.2f}")
    lines.append(f"| {r['name']} | {r['role']} | {r['config']} | {r['measured_s']:.2f} | "
                 f"{figures} |")
  lines += ["", "## Sources", ""]
  for r in result["rows"]:
    s = r["source"]
    lines.append(f"- **{r['name']}**: {s['url']} — “{s['quote']}”. Per step: {s['derivation']}.")
  lines += ["", "## Closing note", "", result["closing_note"], ""]
  return "\n".join(lines)


def reanalyze(aot: dict, hlo_path: str) -> dict:
  """aot.json re-derived from the saved scheduled HLO by the current analysis (no recompile)."""
  from harness.aot.analysis import analyze_hlo  # pylint: disable=g-import-not-at-top
  from harness.aot.topology import get_topology  # pylint: disable=g-import-not-at-top
  from harness.mesh import make_mesh  # pylint: disable=g-import-not-at-top
  topo = get_topology(aot["topology"]["name"])
  # The compile's logical device order is its arguments' mesh order (harness.aot.compile_step).
  mesh = make_mesh(**aot["mesh"], devices=topo.devices)
  coords = [tuple(d.coords) for d in mesh.devices.flat]
  with open(hlo_path) as f:
    text = f.read()
  return {**aot, **analyze_hlo(text, topo.hardware, coords, topo.dims, topo.wraparound)}


def _load_one(results_dir: str, run: str) -> Prediction | str:
  """A run's prediction, re-analysed from its HLO when aot.json lacks a field; else why not."""
  path = os.path.join(results_dir, run, "aot.json")
  if not os.path.exists(path):
    return f"no {path}: run the calibration sweep"
  with open(path) as f:
    aot = json.load(f)
  hlo = os.path.join(results_dir, run, "aot_hlo.txt")
  if "bound_scenarios" not in aot and aot.get("fits_hbm") and os.path.exists(hlo):
    aot = reanalyze(aot, hlo)
  try:
    return read_prediction(aot, run)
  except ValueError as e:
    return str(e)


def load_predictions(results_dir: str) -> dict[str, Prediction | str]:
  """Every run the points name: its prediction, or why it has none."""
  preds = {run: _load_one(results_dir, run) for run in sorted({p.run for p in POINTS})}
  if not any(isinstance(p, Prediction) for p in preds.values()):
    raise ValueError(f"no run in {results_dir} has a prediction: {next(iter(preds.values()))}")
  return preds


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("results_dir")
  parser.add_argument("--copy_to", default=None, help="also copy both files into this folder")
  args = parser.parse_args(argv)
  try:
    result = calibrate(load_predictions(args.results_dir))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  paths = [os.path.join(args.results_dir, "calibration.json"),
           os.path.join(args.results_dir, "calibration.md")]
  with open(paths[0], "w") as f:
    json.dump(result, f, indent=2)
  with open(paths[1], "w") as f:
    f.write(to_markdown(result))
  for path in paths if args.copy_to else ():
    os.makedirs(args.copy_to, exist_ok=True)
    shutil.copy(path, args.copy_to)
  print(result["closing_note"])
  return 0


if __name__ == "__main__":
  sys.exit(main())
