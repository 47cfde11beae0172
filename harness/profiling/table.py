"""Console table of an analyze() result: per step and device, plus collectives and head groups."""
from __future__ import annotations

from typing import Any


def _fmt(value: float | None, unit: str = "ms") -> str:
  if value is None:
    return "-"
  return f"{value * 1e3:.3f}" if unit == "ms" else f"{value:.3f}"


# What each column means, printed above the table: the numbers are unions of op intervals, so
# collective + compute can exceed wall when they overlap.
_LEGEND = (
    "  wall: first op start to last op end; collective: time any collective runs; compute: time "
    "any other op runs;",
    "  exposed: collective time with no compute running; overlap: 1 - exposed/collective; "
    "attn share: attention's share of compute")


def format_table(result: dict[str, Any]) -> str:
  """A readable console table of an analyze() result."""
  head = (f"trace: {result['platform']}, module {result['module']}, {result['steps']} step(s) x "
          f"{result['devices']} device(s), per step and device (ms)")
  cols = ("step", "wall", "collective", "compute", "exposed", "overlap", "attn share")
  lines = [head, *_LEGEND, "  ".join(f"{c:>10}" for c in cols)]

  def row(label: str, r: dict[str, Any]) -> str:
    cells = (label, _fmt(r["wall_s"]), _fmt(r["collective_s"]), _fmt(r["compute_s"]),
             _fmt(r["exposed_collective_s"]), _fmt(r["overlap_fraction"], ""),
             _fmt(r["attention_share"], ""))
    return "  ".join(f"{c:>10}" for c in cells)

  for i, r in enumerate(result["per_step"]):
    lines.append(row(str(r.get("step", i)), r))
  lines.append(row("mean", result))
  for kind, entry in result["collectives"].items():
    lines.append(f"  {kind:<20} {entry['count']:8.1f} per step  {_fmt(entry['time_s'])} ms")
  for chunk, entry in result["chunks"].items():
    lines.append(f"  chunk {chunk:<14} collective {_fmt(entry['collective_s'])} ms, exposed "
                 f"{_fmt(entry['exposed_collective_s'])} ms, compute {_fmt(entry['compute_s'])} ms")
  return "\n".join(lines)
