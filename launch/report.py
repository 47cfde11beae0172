"""`python -m launch.report RESULTS_DIR`: report.md, report.json, report.png and a TensorBoard image."""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any, Sequence

from harness.outputs import AotReport
from launch import aot_gain, plot, results, stats, table

HEADER = ("| variant | chunks | degree | sequence | step time ms (p10–p90) | speedup vs single-shot "
          "| exposed collective ms | overlap | AOT step ms | AOT gain | AOT hidden | runs ok "
          "| timed steps × repeats | verdict |")
NOTE = ("Speedup = single-shot median step time / chunked median (> 1: chunked is faster); the "
        "interval is a 95 % bootstrap over repeats then steps when per-step times were recorded, "
        "else the min–max over repeat medians. Verdict: `faster` when the whole interval is above "
        "1, `slower` when it is below 1, `no clear difference` when it crosses 1. Timed steps "
        "leave out warm-up and profiled steps. AOT columns are predictions for the TPU topology "
        "from the compiled schedule.")
CPU_NOTE = ("**CPU run (simulated devices):** these times measure the overhead of the mechanics "
            "(each all-to-all is a blocking rendezvous of threads that share the cores), not TPU "
            "overlap; for that, see the AOT columns or run on TPU.")


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
  aot = row.aot or AotReport()
  cells = [row.variant or "–", str(row.chunks), _num(row.degree), _num(row.sequence, digits=9),
           step, gain, _num(row.exposed_s, 1e3), _num(row.overlap, digits=2),
           _num(aot.predicted_step_s, 1e3, 4), _num(row.aot_gain, digits=4),
           _num(aot.hidden_fraction, digits=2),
           f"{len(row.summaries)}/{row.runs}" if row.runs else "–",
           _steps(row), row.verdict or ("baseline" if row.chunks == 1 and row.step else "–")]
  return "| " + " | ".join(cells) + " |"


def _steps(row: table.Row) -> str:
  n, repeats = row.step_counts
  return f"{n} × {repeats}" if repeats else "–"


def result_line(group: table.Group, row: table.Row) -> str:
  """One console line: a configuration's ratio against single-shot, its interval and verdict."""
  head = f"{group.mode} · {group.label} · chunks={row.chunks}:"
  if row.speedup:
    n, repeats = row.step_counts
    cpu = "; CPU: mechanics overhead, not TPU overlap" if "cpu" in group.platforms else ""
    return (f"{head} {row.speedup.ratio:.3f}× vs single-shot "
            f"[{row.speedup.low:.3f}–{row.speedup.high:.3f}, {row.speedup.method}] -> "
            f"{row.verdict} ({n} timed steps × {repeats} repeats{cpu})")
  if row.aot_gain:
    return f"{head} AOT-predicted {row.aot_gain:.3f}× vs single-shot (not measured)"
  return f"{head} no ratio (no successful run of this or of the single-shot configuration)"


def result_lines(groups: Sequence[table.Group]) -> list[str]:
  """result_line for every configuration that is not single-shot itself."""
  return [result_line(g, row) for g in groups for row in g.rows.values() if row.chunks != 1]


def markdown(title: str, groups: Sequence[table.Group], records: Sequence[dict]) -> str:
  """The whole report as markdown."""
  lines = [f"# {title}", "", NOTE, ""]
  for group in groups:
    lines += [f"## {group.mode} · {group.label}", ""]
    lines += [CPU_NOTE, ""] if "cpu" in group.platforms else []
    lines += [HEADER, "|" + "---|" * 14]
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


def _row_json(row: table.Row) -> dict[str, Any]:
  speed = row.speedup
  return {"chunks": row.chunks, "variant": row.variant, "degree": row.degree,
          "sequence": row.sequence, "runs": row.runs, "runs_ok": len(row.summaries),
          "timed_steps": row.timed_steps, "repeats": len(row.timed_steps),
          "step_time_s": dict(zip(("median", "p10", "p90"), row.step)) if row.step else None,
          "speedup": None if not speed else {
              "ratio": speed.ratio, "low": speed.low, "high": speed.high,
              "method": speed.method, "level": stats.LEVEL if speed.method == "bootstrap" else None},
          "verdict": row.verdict, "exposed_collective_s": row.exposed_s,
          "overlap_fraction": row.overlap, "aot_gain": row.aot_gain,
          "aot_predicted_step_s": row.aot.predicted_step_s if row.aot else None}


def to_json(title: str, groups: Sequence[table.Group]) -> dict[str, Any]:
  """report.json: every configuration's numbers, its interval, verdict and timed-step counts."""
  return {"title": title, "note": NOTE,
          "groups": [{"mode": g.mode, "hardware": g.hardware, "label": g.label,
                      "point": g.point, "platforms": g.platforms,
                      "note": CPU_NOTE if "cpu" in g.platforms else None,
                      "rows": [_row_json(r) for r in g.rows.values()]} for g in groups]}


def load(results_dir: str | pathlib.Path) -> tuple[list[dict], list[table.Group]]:
  """The records of results.jsonl and their report groups."""
  results_dir = pathlib.Path(results_dir)
  if not (results_dir / results.RESULTS_FILE).is_file():
    raise ValueError(f"{results_dir}: no {results.RESULTS_FILE} (run python -m launch first)")
  records = list(results.ResultsFile(results_dir / results.RESULTS_FILE).load().values())
  return records, table.build(records)


def write_report(results_dir: str | pathlib.Path) -> pathlib.Path:
  """Reads results.jsonl and writes report.md, report.json, report.png and the TensorBoard image."""
  results_dir = pathlib.Path(results_dir)
  records, groups = load(results_dir)
  path = results_dir / "report.md"
  path.write_text(markdown(results_dir.name, groups, records) + aot_gain.markdown(groups))
  report = to_json(results_dir.name, groups)
  report["predicted_gain"] = aot_gain.to_json(groups)
  (results_dir / "report.json").write_text(json.dumps(
      report, indent=1, sort_keys=True, default=str) + "\n")
  plot.write(groups, results_dir, title=results_dir.name)
  return path


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m launch.report", description="Write report.md, report.json and report.png.",
      epilog="Example: python -m launch.report results/quick-cpu")
  parser.add_argument("results_dir", help="directory holding results.jsonl")
  args = parser.parse_args(argv)
  try:
    path = write_report(args.results_dir)
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(path.read_text())
  for line in result_lines(load(args.results_dir)[1]):
    print(line)
  print(f"wrote {path}, {path.with_suffix('.json')}, {path.with_suffix('.png')}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
