"""results.jsonl (one JSON line per run, crash-safe) and what makes a run's outputs complete."""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any

from etils import epath

from harness import outputs
from harness.outputs import AotReport, Summary, TimeStats
from launch import sweep

RESULTS_FILE = "results.jsonl"


def _read_json(path: epath.Path) -> dict | None:
  """The JSON object at `path`, or None if it is missing or not (yet) valid."""
  try:
    value = json.loads(path.read_text())
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_outputs(run_dir: str | os.PathLike, mode: str) -> tuple[bool, dict | None, dict | None]:
  """(complete, summary, aot) of a run directory, local or gs://; the two files as read.

  Complete means: summary.json parses and says "status": "ok" (and, for train/eval, timed at
  least one step); or, when it has no status,
  train/eval runs have a numeric step_time_s.median and aot runs an aot.json with a numeric
  predicted_step_s (or fits_hbm false: a config too big for HBM is an answer, not a crash).
  """
  run_dir = epath.Path(run_dir)
  summary_json = _read_json(run_dir / "summary.json")
  aot_json = _read_json(run_dir / "aot.json") if mode == "aot" else None
  summary = outputs.coerce(Summary, summary_json)
  if summary is not None and summary.status is not None:
    return summary.status == "ok" and not _timed_nothing(summary, mode), summary_json, aot_json
  if mode == "aot":
    report = AotReport.of_run(aot_json, summary_json) or AotReport()
    return report.has_prediction or report.fits_hbm is False, summary_json, aot_json
  return summary is not None and _is_number(summary.median_step_s), summary_json, aot_json


def _timed_nothing(summary: Summary, mode: str) -> bool:
  """A train/eval summary that says ok but timed no step: an empty run, never a result."""
  return mode != "aot" and isinstance(summary.step_time_s, TimeStats) and \
      summary.step_time_s.n == 0


class ResultsFile:
  """Append-only JSON lines, at most one per run; a torn last line is dropped on open."""

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._repair()

  def _repair(self) -> None:
    """A launcher killed inside write() can leave a partial line: cut back to the last newline."""
    if not self.path.exists():
      return
    data = self.path.read_bytes()
    if data and not data.endswith(b"\n"):
      with open(self.path, "r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)
        f.flush()
        os.fsync(f.fileno())

  def load(self) -> dict[str, dict]:
    """The record of each run by name (the last one wins if a file was merged by hand)."""
    records: dict[str, dict] = {}
    if not self.path.exists():
      return records
    for line in self.path.read_text().splitlines():
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if isinstance(record, dict) and "run" in record:
        records[record["run"]] = record
    return records

  def put(self, record: dict) -> None:
    """Adds a run's record durably; replaces (never duplicates) an earlier one of the same run."""
    line = json.dumps(record, sort_keys=True, default=repr) + "\n"
    if record["run"] in self.load():
      self._rewrite_with(record["run"], line)
      return
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, line.encode())
      os.fsync(fd)
    finally:
      os.close(fd)

  def _rewrite_with(self, run: str, line: str) -> None:
    """Writes a copy without `run`'s old line plus the new one, then renames it into place."""
    kept = [l for l in self.path.read_text().splitlines(keepends=True)
            if _run_of(l) != run]
    fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".results-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
      f.writelines(kept + [line])
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.path)
    dir_fd = os.open(self.path.parent, os.O_RDONLY)
    try:
      os.fsync(dir_fd)
    finally:
      os.close(dir_fd)


def _run_of(line: str) -> str | None:
  try:
    return json.loads(line).get("run")
  except (ValueError, AttributeError):
    return None


def make_record(run, status: str, *, summary: dict | None = None, aot: dict | None = None,
                error: str | None = None, returncode: int | None = None,
                wall_s: float | None = None, output_dir: str | None = None) -> dict:
  """The results.jsonl line of one run (`run` is a launch.sweep.Run)."""
  point = {axis: sweep.point_value(value) for axis, value in run.point}
  return {
      "run": run.name, "status": status, "mode": run.mode, "repeat": run.repeat,
      "point": point, "hardware": run.hardware.name, "tpu_type": run.hardware.tpu_type,
      "num_slices": run.hardware.num_slices, "gin_files": list(run.gin_files),
      "bindings": list(run.bindings), "fingerprint": run.fingerprint(),
      "output_dir": output_dir, "returncode": returncode, "wall_s": wall_s, "error": error,
      "summary": summary, "aot": aot,
  }
