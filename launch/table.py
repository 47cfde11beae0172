"""Rows of the report: runs grouped by configuration, one row per chunk count."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import numpy as np

from harness import outputs
from harness.outputs import AotReport, Summary
from launch import stats

CHUNKS = "attention.num_chunks"


@dataclasses.dataclass
class Row:
  """One chunk count of one configuration, over its repeats."""
  chunks: int
  variant: str | None = None
  degree: int | None = None
  sequence: int | None = None
  summaries: list[Summary] = dataclasses.field(default_factory=list)
  runs: int = 0
  aot: AotReport | None = None
  step: tuple[float, float, float] | None = None
  speedup: stats.Speedup | None = None
  aot_gain: float | None = None
  exposed_s: float | None = None
  overlap: float | None = None

  @property
  def timed_steps(self) -> list[int]:
    """Steps in the timing statistics, per ok repeat."""
    return [n for n in map(stats.timed_steps, self.summaries) if n is not None]

  @property
  def step_counts(self) -> tuple[str, int]:
    """(timed steps per run, a range when repeats differ; ok repeats with a count)."""
    steps = self.timed_steps
    if not steps:
      return "–", 0
    return (str(steps[0]) if min(steps) == max(steps) else f"{min(steps)}–{max(steps)}",
            len(steps))

  @property
  def verdict(self) -> str | None:
    """The speedup's verdict; None for the single-shot baseline itself."""
    return None if self.chunks == 1 else stats.verdict(self.speedup)


@dataclasses.dataclass
class Group:
  """Runs that differ only in attention.num_chunks (and repeat)."""
  mode: str
  hardware: str
  point: dict[str, Any]
  rows: dict[int, Row] = dataclasses.field(default_factory=dict)

  @property
  def platforms(self) -> list[str]:
    """Platforms the measured runs ran on ('cpu', 'tpu', ...)."""
    return sorted({p for row in self.rows.values() for s in row.summaries
                   if s.devices and isinstance(p := s.devices.platform, str)})

  @property
  def label(self) -> str:
    parts = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.point.items()]
    return " ".join([self.hardware, *parts]) if self.hardware != "local" or not parts else \
        " ".join(parts)


def _summary(record: dict) -> Summary | None:
  return outputs.coerce(Summary, record.get("summary"))


def _aot(record: dict) -> AotReport | None:
  return AotReport.of_run(record.get("aot"), record.get("summary"))


def _chunks(record: dict) -> int:
  summary = _summary(record)
  value = record["point"].get(CHUNKS, summary.attention.num_chunks
                              if summary and summary.attention else None)
  return int(value) if value is not None else 1


def _describe(row: Row, record: dict) -> None:
  """Fills variant / degree / sequence from the first record that knows them."""
  summary, point = _summary(record) or Summary(), record["point"]
  attention = summary.attention or outputs.Attention()
  row.variant = row.variant or attention.variant or point.get("attention.variant")
  if row.degree is None:
    if row.variant == "ulysses_ring":
      row.degree = attention.ulysses_degree or point.get("attention.ulysses_degree")
    else:
      row.degree = (summary.mesh or {}).get("context") or point.get("mesh.context")
  row.sequence = row.sequence or _sequence(summary, outputs.coerce(AotReport, record.get("aot")))


def _sequence(summary: Summary, aot: AotReport | None) -> int | None:
  """Tokens per sample (older files' keys are read by from_json)."""
  for value in (summary.sequence_length, aot.sequence_length if aot else None):
    if isinstance(value, int) and not isinstance(value, bool):
      return value
  return None


def _key(record: dict, with_mode: bool) -> tuple:
  rest = tuple((k, json.dumps(v, sort_keys=True, default=repr))
               for k, v in record["point"].items() if k != CHUNKS)
  return ((record["mode"],) if with_mode else ()) + (record["hardware"], rest)


def _finish(group: Group) -> None:
  """Step-time stats, speedups against the chunks=1 row, trace and AOT columns."""
  base = group.rows.get(1)
  for row in group.rows.values():
    if row.summaries:
      row.step = stats.step_time(row.summaries)
      row.speedup = stats.speedup(base.summaries, row.summaries) if base else None
      exposed = [s.trace.exposed_collective_s for s in row.summaries if s.trace]
      overlap = [s.trace.overlap_fraction for s in row.summaries if s.trace]
      row.exposed_s = _median(exposed)
      row.overlap = _median(overlap)
    base_pred = base.aot.predicted_step_s if base and base.aot else None
    pred = row.aot.predicted_step_s if row.aot else None
    if isinstance(base_pred, (int, float)) and isinstance(pred, (int, float)) and pred > 0:
      row.aot_gain = base_pred / pred


def _median(values: Sequence[Any]) -> float | None:
  numbers = [v for v in values if isinstance(v, (int, float))]
  return float(np.median(numbers)) if numbers else None


def build(records: Sequence[dict]) -> list[Group]:
  """Groups ok records by configuration; AOT predictions join the measured rows they match."""
  groups: dict[tuple, Group] = {}
  ok = [r for r in records if r.get("status") == "ok"]
  for record in sorted((r for r in records if r["mode"] != "aot"), key=lambda r: r["run"]):
    group = groups.setdefault(_key(record, True), Group(
        record["mode"], record["hardware"],
        {k: v for k, v in record["point"].items() if k != CHUNKS}))
    row = group.rows.setdefault(_chunks(record), Row(_chunks(record)))
    row.runs += 1
    if record.get("status") == "ok":
      row.summaries.append(_summary(record))
      _describe(row, record)
  for record in (r for r in ok if r["mode"] == "aot"):
    matched = [g for k, g in groups.items() if k[1:] == _key(record, False)]
    if not matched:
      matched = [groups.setdefault(_key(record, True), Group(
          "aot", record["hardware"], {k: v for k, v in record["point"].items() if k != CHUNKS}))]
    for group in matched:
      row = group.rows.setdefault(_chunks(record), Row(_chunks(record)))
      row.aot = _aot(record)
      _describe(row, record)
  for group in groups.values():
    group.rows = dict(sorted(group.rows.items()))
    _finish(group)
  return list(groups.values())
