"""Run outputs: metrics.jsonl, TensorBoard scalars and text, summary.json (process 0 only)."""
from __future__ import annotations

import json
import logging
import math
import os
import pathlib
from typing import Any

import numpy as np
from tensorboardX import SummaryWriter  # TF-free event writer

log = logging.getLogger(__name__)


def time_stats(times_s: list[float]) -> dict[str, float]:
  """Median with the 10th and 90th percentiles of step times."""
  if not times_s:
    return {"median": float("nan"), "p10": float("nan"), "p90": float("nan"), "n": 0}
  arr = np.asarray(times_s, dtype=np.float64)
  return {"median": float(np.median(arr)), "p10": float(np.percentile(arr, 10)),
          "p90": float(np.percentile(arr, 90)), "n": int(arr.size)}


def finite_or_none(obj: Any) -> Any:
  """The same structure with NaN and Inf floats as None: JSON has no NaN."""
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: finite_or_none(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [finite_or_none(v) for v in obj]
  return obj


def write_json_atomic(path: pathlib.Path, obj: Any) -> None:
  """Writes strict JSON via a temporary file and rename so readers never see half a file."""
  tmp = path.with_name(path.name + ".tmp")
  try:
    with open(tmp, "w") as f:
      json.dump(finite_or_none(obj), f, indent=2, sort_keys=True, default=str, allow_nan=False)
      f.write("\n")
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def read_records(path: pathlib.Path) -> list[dict]:
  """metrics.jsonl's records; a torn or garbled line is dropped with a warning naming the file."""
  if not path.exists():
    return []
  records = []
  for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      int(record["step"])
    except (ValueError, KeyError, TypeError):
      log.warning("%s: dropping unreadable line %d (a write cut short?)", path, number)
      continue
    records.append(record)
  return records


def _keep_steps_below(path: pathlib.Path, step: int) -> None:
  """On resume from `step`, drops records of steps that will run again (none on a fresh run)."""
  if not path.exists():
    return
  kept = [r for r in read_records(path) if step > 0 and r["step"] < step]
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
  os.replace(tmp, path)


class MetricsWriter:
  """Appends per-step records and TensorBoard scalars; a no-op on processes other than 0."""

  def __init__(self, run_dir: pathlib.Path, enabled: bool, resume_step: int | None = 0):
    self.run_dir = run_dir
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if enabled:
      run_dir.mkdir(parents=True, exist_ok=True)
      self._tb = SummaryWriter(str(run_dir / "tensorboard"))
    if resume_step is not None:
      self.start(resume_step)

  def start(self, step: int) -> None:
    """Continues metrics.jsonl from `step`: records of steps that will run again are dropped."""
    if self.enabled and self._jsonl is None:
      path = self.run_dir / "metrics.jsonl"
      _keep_steps_below(path, step)
      self._jsonl = open(path, "a")

  def step(self, record: dict[str, Any], scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    self.start(0)
    self._jsonl.write(json.dumps(finite_or_none(record)) + "\n")
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
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
