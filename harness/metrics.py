"""Run outputs: metrics.jsonl, TensorBoard scalars and text, summary.json (process 0 only)."""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np


def time_stats(times_s: list[float]) -> dict[str, float]:
  """Median with the 10th and 90th percentiles of step times."""
  if not times_s:
    return {"median": float("nan"), "p10": float("nan"), "p90": float("nan"), "n": 0}
  arr = np.asarray(times_s, dtype=np.float64)
  return {"median": float(np.median(arr)), "p10": float(np.percentile(arr, 10)),
          "p90": float(np.percentile(arr, 90)), "n": int(arr.size)}


def write_json_atomic(path: pathlib.Path, obj: Any) -> None:
  """Writes via a temporary file and rename so readers never see half a file."""
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=str)
    f.write("\n")
  os.replace(tmp, path)


def _keep_steps_below(path: pathlib.Path, step: int) -> None:
  """On resume from `step`, drops records of steps that will run again (none on a fresh run)."""
  if not path.exists():
    return
  kept = [ln for ln in path.read_text().splitlines()
          if ln.strip() and step > 0 and json.loads(ln)["step"] < step]
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(ln + "\n" for ln in kept))
  os.replace(tmp, path)


class MetricsWriter:
  """Appends per-step records and TensorBoard scalars; a no-op on processes other than 0."""

  def __init__(self, run_dir: pathlib.Path, enabled: bool, resume_step: int = 0):
    self.run_dir = run_dir
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter  # TF-free event writer
      run_dir.mkdir(parents=True, exist_ok=True)
      path = run_dir / "metrics.jsonl"
      _keep_steps_below(path, resume_step)
      self._jsonl = open(path, "a")
      self._tb = SummaryWriter(str(run_dir / "tensorboard"))

  def step(self, record: dict[str, Any], scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for tag, value in scalars.items():
      self._tb.add_scalar(tag, value, record["step"])

  def scalars(self, values: dict[str, float], step: int) -> None:
    if self.enabled:
      for tag, value in values.items():
        self._tb.add_scalar(tag, value, step)

  def text(self, tag: str, text: str) -> None:
    if self.enabled:
      # Indent so TensorBoard's markdown renderer keeps the config as a code block.
      self._tb.add_text(tag, "\n".join("    " + ln for ln in text.splitlines()), 0)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
