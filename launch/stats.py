"""Speedup of chunked over single-shot runs: ratio of medians and its spread."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Speedup:
  """baseline median / candidate median (> 1: the candidate is faster), with an interval."""
  ratio: float
  low: float
  high: float
  method: str  # 'bootstrap' (over repeats, then steps) or 'min-max' (over repeat medians)


FASTER, SLOWER, UNCLEAR = "faster", "slower", "no clear difference"


def verdict(speedup: Speedup | None) -> str | None:
  """'faster' / 'slower' when the whole interval is above / below 1, else 'no clear difference'."""
  if speedup is None:
    return None
  if speedup.low > 1.0:
    return FASTER
  if speedup.high < 1.0:
    return SLOWER
  return UNCLEAR


def timed_steps(summary: dict) -> int | None:
  """Steps that entered a run's step-time statistics (warm-up and profiled steps excluded)."""
  steps = summary.get("step_times_s")
  if isinstance(steps, list):
    return len(steps)
  n = (summary.get("step_time_s") or {}).get("n")
  return int(n) if isinstance(n, (int, float)) else None


def _pooled_median(runs: Sequence[Sequence[float]]) -> float:
  return float(np.median(np.concatenate([np.asarray(r, float) for r in runs])))


def _resample(runs: Sequence[np.ndarray], rng: np.random.Generator) -> float:
  """Median of one hierarchical resample: repeats with replacement, then steps within each."""
  picked = rng.integers(0, len(runs), size=len(runs))
  return float(np.median(np.concatenate(
      [runs[i][rng.integers(0, len(runs[i]), size=len(runs[i]))] for i in picked])))


def bootstrap(base: Sequence[Sequence[float]], cand: Sequence[Sequence[float]],
              samples: int = BOOTSTRAP_SAMPLES, level: float = LEVEL, seed: int = 0) -> Speedup:
  """Ratio of pooled medians and its percentile bootstrap interval; step times per repeat."""
  base_arrays = [np.asarray(r, float) for r in base]
  cand_arrays = [np.asarray(r, float) for r in cand]
  rng = np.random.default_rng(seed)
  ratios = np.array([_resample(base_arrays, rng) / _resample(cand_arrays, rng)
                     for _ in range(samples)])
  tail = (1.0 - level) / 2.0
  low, high = np.quantile(ratios, [tail, 1.0 - tail])
  return Speedup(_pooled_median(base) / _pooled_median(cand), float(low), float(high), "bootstrap")


def min_max(base_medians: Sequence[float], cand_medians: Sequence[float]) -> Speedup:
  """Ratio of the medians of repeat medians, bounded by the slowest and fastest pairings."""
  base, cand = np.asarray(base_medians, float), np.asarray(cand_medians, float)
  return Speedup(float(np.median(base) / np.median(cand)), float(base.min() / cand.max()),
                 float(base.max() / cand.min()), "min-max")


def speedup(base: Sequence[dict], cand: Sequence[dict]) -> Speedup | None:
  """From two lists of summary.json dicts (repeats); bootstrap when step times were kept."""
  if not base or not cand:
    return None
  base_steps = [s.get("step_times_s") for s in base]
  cand_steps = [s.get("step_times_s") for s in cand]
  if all(isinstance(s, list) and len(s) >= 2 for s in base_steps + cand_steps):
    return bootstrap(base_steps, cand_steps)
  return min_max([s["step_time_s"]["median"] for s in base],
                 [s["step_time_s"]["median"] for s in cand])


def step_time(summaries: Sequence[dict]) -> tuple[float, float, float]:
  """(median, p10, p90) of step time over repeats, pooled when per-step times were kept."""
  steps = [s.get("step_times_s") for s in summaries]
  if all(isinstance(s, list) and s for s in steps):
    pooled = np.concatenate([np.asarray(s, float) for s in steps])
    median, p10, p90 = np.percentile(pooled, [50, 10, 90])
    return float(median), float(p10), float(p90)
  stats = [s["step_time_s"] for s in summaries]
  return (float(np.median([t["median"] for t in stats])),
          float(min(t.get("p10", t["median"]) for t in stats)),
          float(max(t.get("p90", t["median"]) for t in stats)))
