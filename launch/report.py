"""`python -m launch.report RESULTS_DIR`: report.md, report.json, report.png and a TensorBoard image."""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Sequence

from launch import aot_gain, plot, results, table

HEADER = ("| variant | chunks | degree | sequence | step time ms (p10–p90) | speedup vs single-shot "
          "| exposed collective ms | overlap | AOT step ms | AOT gain | AOT hidden | runs ok |")
NOTE = ("Speedup = single-shot median step time / chunked median (> 1: chunked is faster); the "
        "interval is a 95 % bootstrap over repeats then steps when per-step times were recorded, "
        "else the min–max over repeat medians. AOT columns are predictions for the TPU topology "
        "from the compiled schedule.")


def _num(value, scale: float = 1.0, digits: int = 3) -> str:
  return "–" if value is None else f"{value * scale:.{digits}g}"


def _row(row: table.Row) -> str:
  step = "–" if not row.step else (
      f"{_num(row.step[0], 1e3, 4)} ({_num(row.step[1], 1e3, 4)}–{_num(row.step[2], 1e3, 4)})")
  if row.chunks == 1 and row.step:
    gain = "1 (baseline)"
  elif row.speedup:
    gain = (f"{row.speedup.ratio:.3f}× "
            f"[{row.speedup.low:.3f}–{row.speedup.high:.3f}, {row.speedup.method}]")
  else:
    gain = "–"
  aot = row.aot or {}
  cells = [row.variant or "–", str(row.chunks), _num(row.degree), _num(row.sequence, digits=9),
           step, gain, _num(row.exposed_s, 1e3), _num(row.overlap, digits=2),
           _num(aot.get("predicted_step_s"), 1e3, 4), _num(row.aot_gain, digits=4),
           _num(aot.get("hidden_fraction"), digits=2),
           f"{len(row.summaries)}/{row.runs}" if row.runs else "–"]
  return "| " + " | ".join(cells) + " |"


def markdown(title: str, groups: Sequence[table.Group], records: Sequence[dict]) -> str:
  """The whole report as markdown."""
  lines = [f"# {title}", "", NOTE, ""]
  for group in groups:
    lines += [f"## {group.mode} · {group.label}", "", HEADER, "|" + "---|" * 12]
    lines += [_row(row) for row in group.rows.values()] + [""]
  failed = [r for r in records if r.get("status") != "ok"]
  if failed:
    lines += ["## Failed runs", ""]
    for record in sorted(failed, key=lambda r: r["run"]):
      last = (record.get("error") or "").strip().splitlines()[-1:] or ["(no message)"]
      lines.append(f"- `{record['run']}`: {last[0]}")
    lines.append("")
  if not groups and not failed:
    lines += ["No runs recorded yet.", ""]
  return "\n".join(lines).rstrip("\n") + "\n"


def write_report(results_dir: str | pathlib.Path) -> pathlib.Path:
  """Reads results.jsonl and writes report.md, report.json, report.png and the TensorBoard image."""
  results_dir = pathlib.Path(results_dir)
  if not (results_dir / results.RESULTS_FILE).is_file():
    raise ValueError(f"{results_dir}: no {results.RESULTS_FILE} (run python -m launch first)")
  records = list(results.ResultsFile(results_dir / results.RESULTS_FILE).load().values())
  groups = table.build(records)
  path = results_dir / "report.md"
  path.write_text(markdown(results_dir.name, groups, records) + aot_gain.markdown(groups))
  aot_gain.write(results_dir, groups)
  plot.write(groups, results_dir, title=results_dir.name)
  return path


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m launch.report", description=__doc__)
  parser.add_argument("results_dir", help="directory holding results.jsonl")
  args = parser.parse_args(argv)
  try:
    path = write_report(args.results_dir)
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(path.read_text())
  print(f"wrote {path}, {path.with_suffix('.png')}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
