"""Predicted gain of every chunk count over single-shot in a sweep's AOT rows (harness.aot.gain)."""
from __future__ import annotations

import json
import pathlib
from typing import Sequence

from harness.aot import gain as gain_lib
from launch import table


def group_gains(group: table.Group) -> dict[int, gain_lib.Gain]:
  """Gains of the group's AOT predictions, C >= 2 over C = 1."""
  return gain_lib.gains_by_chunks({c: row.aot for c, row in group.rows.items() if row.aot})


def to_json(groups: Sequence[table.Group]) -> list[dict]:
  """One entry per group with predictions: its label and `predicted_gain` per chunk count."""
  out = []
  for group in groups:
    gains = group_gains(group)
    if gains:
      out.append({"label": group.label, "mode": group.mode, "hardware": group.hardware,
                  "point": group.point,
                  "predicted_gain": {str(c): g.to_dict() for c, g in gains.items()},
                  "sentences": [g.sentence(f"{group.label} · C={c}") for c, g in gains.items()]})
  return out


def sentences(groups: Sequence[table.Group]) -> list[str]:
  """One sentence per group and chunk count: 'v5p16 resolution=720p · C=4: +2.0 % predicted = ...'."""
  return [line for entry in to_json(groups) for line in entry["sentences"]]


def markdown(groups: Sequence[table.Group]) -> str:
  """The report's section on predicted gains ('' when no group has two AOT predictions)."""
  lines = sentences(groups)
  if not lines:
    return ""
  return "\n".join(["", "## Predicted gain over single-shot (AOT)", "",
                    "Decomposed into overlap, communication and compute by kind; the range spans "
                    "the uncertain costs (docs/aot.md).", ""] + [f"- {s}" for s in lines]) + "\n"


def write(results_dir: pathlib.Path, groups: Sequence[table.Group]) -> None:
  """Adds `predicted_gain` to results_dir/report.json (created if absent, other keys kept)."""
  path = pathlib.Path(results_dir) / "report.json"
  report = json.loads(path.read_text()) if path.is_file() else {}
  report["predicted_gain"] = to_json(groups)
  path.write_text(json.dumps(report, indent=1, sort_keys=True, default=str) + "\n")


def written_sentences(results_dir: str | pathlib.Path) -> list[str]:
  """The sentences `write` put in results_dir/report.json (none if it holds no predictions)."""
  path = pathlib.Path(results_dir) / "report.json"
  entries = json.loads(path.read_text()).get("predicted_gain", []) if path.is_file() else []
  return [line for entry in entries for line in entry.get("sentences", [])]
