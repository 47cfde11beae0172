"""Speedup of chunked over single-shot runs: ratio of medians and its spread."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from harness import outputs
from harness.outputs import Summary

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


def _summaries(values: Sequence[Summary | dict]) -> list[Summary]:
  """Typed summaries; a results.jsonl entry (a dict) is read with Summary.from_json."""
  return [outputs.coerce(Summary, v) for v in values]


def timed_steps(summary: Summary | dict) -> int | None:
  """Steps that entered a run's step-time statistics (warm-up and profiled steps excluded)."""
  return outputs.coerce(Summary, summary).timed_steps


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


def speedup(base: Sequence[Summary | dict], cand: Sequence[Summary | dict]) -> Speedup | None:
  """From two lists of summaries (repeats); bootstrap when step times were kept."""
  if not base or not cand:
    return None
  base, cand = _summaries(base), _summaries(cand)
  base_steps = [s.step_times_s for s in base]
  cand_steps = [s.step_times_s for s in cand]
  if all(isinstance(s, list) and len(s) >= 2 for s in base_steps + cand_steps):
    return bootstrap(base_steps, cand_steps)
  return min_max([s.median_step_s for s in base], [s.median_step_s for s in cand])


def step_time(summaries: Sequence[Summary | dict]) -> tuple[float, float, float]:
  """(median, p10, p90) of step time over repeats, pooled when per-step times were kept."""
  summaries = _summaries(summaries)
  steps = [s.step_times_s for s in summaries]
  if all(isinstance(s, list) and s for s in steps):
    pooled = np.concatenate([np.asarray(s, float) for s in steps])
    median, p10, p90 = np.percentile(pooled, [50, 10, 90])
    return float(median), float(p10), float(p90)
  stats = [s.step_time_s for s in summaries]
  return (float(np.median([t.median for t in stats])),
          float(min(t.median if t.p10 is None else t.p10 for t in stats)),
          float(max(t.median if t.p90 is None else t.p90 for t in stats)))
