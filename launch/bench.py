"""Benchmark experiments: `bench.*` gin files whose entries are scripts writing JSON figures.

    python -m launch --experiment experiments/bench.gin --backend local

Each script runs once per results folder (a rerun skips finished ones), writes its figures to
`parts/NAME.json`; they are merged into `bench.json` (with the machine they ran on) and a
markdown table `bench.md` with each figure, its spread and its target.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from typing import Any

from launch import gin_static, sweep

PARAMS = ("name", "scripts", "targets")


@dataclasses.dataclass(frozen=True)
class Bench:
  name: str
  scripts: tuple[tuple[str, tuple[str, ...]], ...]  # name → argv after `python`
  targets: tuple[tuple[str, str], ...]  # figure → '<= 1.05'


def load_bench(path: str) -> Bench | None:
  """The bench spec of an experiment file, or None when it is a sweep."""
  file = gin_static.find_file(path, [sweep.REPO_ROOT, sweep.REPO_ROOT / "experiments"])
  if file is None:
    return None
  raw = gin_static.read_bindings(file, [sweep.REPO_ROOT])
  if not any(k.startswith("bench.") for k in raw):
    return None
  unknown = [k for k in raw if k.rpartition(".")[::2] not in [("bench", p) for p in PARAMS]]
  if unknown:
    raise ValueError(f"{path}: unknown binding '{unknown[0]}'; a benchmark file sets only "
                     f"bench.{{{','.join(PARAMS)}}}")
  scripts = raw.get("bench.scripts") or {}
  if not isinstance(scripts, dict) or not scripts:
    raise ValueError(f"{path}: bench.scripts is empty; give {{'name': ['script.py', ...]}}")
  return Bench(str(raw.get("bench.name", file.stem)),
               tuple((k, tuple(map(str, v))) for k, v in scripts.items()),
               tuple(dict(raw.get("bench.targets", {})).items()))


def _run_script(name: str, argv: tuple[str, ...], parts: pathlib.Path) -> dict:
  out = parts / f"{name}.json"
  if out.exists():
    return json.loads(out.read_text())
  tmp = parts / f"{name}.json.tmp"
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, *argv, "--out", str(tmp)], cwd=sweep.REPO_ROOT,
                        capture_output=True, text=True)
  if proc.returncode != 0 or not tmp.exists():
    tmp.unlink(missing_ok=True)
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    raise RuntimeError(f"benchmark {name} failed ({proc.returncode}): {tail}")
  figures = json.loads(tmp.read_text())
  figures[f"{name}_wall_s"] = time.perf_counter() - start
  tmp.write_text(json.dumps(figures, indent=2))
  os.replace(tmp, out)
  return figures


def machine() -> dict[str, Any]:
  cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
              if ln.startswith("model name")), platform.processor()) if os.path.exists(
                  "/proc/cpuinfo") else platform.processor()
  return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
          "jax": importlib.metadata.version("jax"), "platform": platform.platform()}


def run_bench(spec: Bench, results_dir: str, only: str | None = None,
              dry_run: bool = False) -> int:
  """Runs the scripts not yet done, merges bench.json, writes bench.md; exit status."""
  parts = pathlib.Path(results_dir) / "parts"
  chosen = [(n, a) for n, a in spec.scripts if not only or n in only.split(",")]
  if dry_run:
    for name, argv in chosen:
      print(f"{name}: python {' '.join(argv)} --out {parts / (name + '.json')}")
    return 0
  parts.mkdir(parents=True, exist_ok=True)
  merged: dict[str, Any] = {"machine": machine(), "targets": dict(spec.targets)}
  failed = 0
  for name, argv in chosen:
    print(f"[{name}] python {' '.join(argv)}", file=sys.stderr, flush=True)
    try:
      merged.update(_run_script(name, argv, parts))
    except RuntimeError as err:
      failed += 1
      print(f"error: {err}", file=sys.stderr)
  (pathlib.Path(results_dir) / "bench.json").write_text(json.dumps(merged, indent=2) + "\n")
  table = render(merged)
  (pathlib.Path(results_dir) / "bench.md").write_text(table)
  print(table)
  return 1 if failed else 0


def _fmt(value: Any) -> str:
  if isinstance(value, dict):
    return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
  if isinstance(value, (list, tuple)):
    return "[" + ", ".join(_fmt(v) for v in value) + "]"
  return f"{value:.3g}" if isinstance(value, float) else str(value)


def _met(value: Any, target: str) -> str:
  op, _, bound = target.partition(" ")
  values = list(value.values()) if isinstance(value, dict) else [value]
  check = {"<=": lambda v: v <= float(bound), ">=": lambda v: v >= float(bound)}[op]
  return "yes" if all(check(v) for v in values if isinstance(v, (int, float))) else "no"


def render(merged: dict) -> str:
  """The markdown table of figures with spread and target."""
  m = merged["machine"]
  lines = [f"Measured on {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
           f"JAX {m['jax']}.", "", "| figure | value | spread (min–max) | target | met |",
           "|---|---|---|---|---|"]
  for key, value in merged.items():
    if key in ("machine", "targets") or key.endswith(("_spread", "_setup", "_wall_s")) or (
        not isinstance(value, (int, float, dict))):
      continue
    target = merged["targets"].get(key, "")
    spread = merged.get(f"{key}_spread", "")
    lines.append(f"| `{key}` | {_fmt(value)} | {_fmt(spread) if spread != '' else ''} | "
                 f"{target} | {_met(value, target) if target else ''} |")
  return "\n".join(lines) + "\n"


README_BEGIN, README_END = "<!-- bench:begin -->", "<!-- bench:end -->"


def update_readme(results_dir: str, readme: str) -> None:
  """Replaces the README's Performance table (between the bench markers) with bench.json's."""
  merged = json.loads((pathlib.Path(results_dir) / "bench.json").read_text())
  text = pathlib.Path(readme).read_text()
  if README_BEGIN not in text or README_END not in text:
    raise ValueError(f"{readme}: no '{README_BEGIN}' ... '{README_END}' markers to fill")
  head, rest = text.split(README_BEGIN, 1)
  tail = rest.split(README_END, 1)[1]
  pathlib.Path(readme).write_text(f"{head}{README_BEGIN}\n{render(merged)}{README_END}{tail}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m launch.bench",
                                   description="Write bench.json's table into the README.")
  parser.add_argument("results_dir", help="folder holding bench.json (e.g. results/bench)")
  parser.add_argument("--readme", default=str(sweep.REPO_ROOT / "README.md"))
  args = parser.parse_args(argv)
  try:
    update_readme(args.results_dir, args.readme)
  except (ValueError, OSError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
