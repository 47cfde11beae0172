"""`python -m launch --experiment experiments/X.gin --backend local|xpk|aot [--dry_run]`."""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Sequence

from launch import aot_backend, aot_gain, bench, local, report, sweep, xpk


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m launch", description="Run a sweep of the harness and report on it.",
      epilog="Example: python -m launch --experiment experiments/quick_cpu.gin --backend local "
             "--dry_run")
  p.add_argument("--experiment", required=True, help="experiments/*.gin with sweep.* bindings")
  p.add_argument("--backend", choices=("local", "xpk", "aot"), default="local")
  p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  p.add_argument("--only", help="comma-separated globs (or substrings) of run names")
  p.add_argument("--results_dir", help="results.jsonl, report and logs (default results/NAME)")
  p.add_argument("--output_dir", help="xpk: run.output_dir as the container sees it (default --results_dir)")
  p.add_argument("--harness_cmd", help=f"replaces `python -m harness` (also ${local.HARNESS_CMD_ENV})")
  p.add_argument("--timeout_s", type=float, help="local/aot: stop a run after this long")
  p.add_argument("--skip_failed", action="store_true", help="do not retry runs that failed")
  p.add_argument("--skip_binding_check", action="store_true",
                 help="do not ask the harness to validate bindings before running")
  p.add_argument("--no_report", action="store_true")
  p.add_argument("--no_progress", action="store_true")
  g = p.add_argument_group("xpk")
  g.add_argument("--cluster")
  g.add_argument("--project")
  g.add_argument("--zone")
  g.add_argument("--docker_image", help="image built from launch/Dockerfile")
  g.add_argument("--base_docker_image")
  g.add_argument("--max_restarts", type=int)
  g.add_argument("--priority", choices=xpk.PRIORITIES)
  g.add_argument("--num_slices", type=int, help="overrides sweep.hardware num_slices")
  g.add_argument("--env", action="append", default=[], help="KEY=VALUE for the container")
  g.add_argument("--storage", action="append", default=[],
                 help="xpk storage to mount (e.g. GCS FUSE holding --output_dir)")
  g.add_argument("--collect_dir", help="--output_dir as seen from here (default the same)")
  g.add_argument("--xpk", default="xpk", help="the xpk executable")
  g.add_argument("--remote_python", default="python", help="python inside the image")
  g.add_argument("--wait_timeout_s", type=int, help="give up waiting for a workload after this")
  return p


def _xpk_options(args: argparse.Namespace) -> xpk.XpkOptions:
  opts = xpk.XpkOptions(
      cluster=args.cluster, project=args.project, zone=args.zone,
      docker_image=args.docker_image, base_docker_image=args.base_docker_image,
      max_restarts=args.max_restarts, priority=args.priority, num_slices=args.num_slices,
      env=tuple(args.env), storage=tuple(args.storage), xpk=args.xpk, python=args.remote_python,
      wait_timeout_s=args.wait_timeout_s, read_flags=not args.skip_binding_check)
  opts.check()
  return opts


def _print_wall_time(start: float) -> None:
  print(f"wall time {time.monotonic() - start:.1f} s", file=sys.stderr)


def launch(args: argparse.Namespace, start: float) -> int:
  """Expands, validates and runs the sweep; returns the exit status."""
  benchmarks = bench.load_bench(args.experiment)
  if benchmarks is not None:
    if args.backend != "local":
      raise ValueError(f"--backend={args.backend}: benchmark files run with --backend local")
    status = bench.run_bench(benchmarks, args.results_dir or f"results/{benchmarks.name}",
                             args.only, args.dry_run)
    if not args.dry_run:
      _print_wall_time(start)
    return status
  spec = sweep.load_experiment(args.experiment)
  runs = aot_backend.aot_runs(spec) if args.backend == "aot" else sweep.expand(spec)
  # Repeat-major order: a change in machine load then hits every configuration alike instead of
  # all repeats of one configuration.
  runs = sorted(sweep.select(runs, args.only), key=lambda run: run.repeat)
  results_dir = args.results_dir or f"results/{spec.name}"
  opts = _xpk_options(args) if args.backend == "xpk" else None
  if not args.skip_binding_check:
    sweep.check_bindings(runs)
  if args.backend == "xpk":
    output_dir = args.output_dir or results_dir
    if args.dry_run:
      xpk.print_commands(runs, opts, output_dir)
      return 0
    counts = xpk.run_sweep(runs, opts, results_dir, output_dir, collect_dir=args.collect_dir,
                           progress=not args.no_progress)
  else:
    cmd = local.harness_command(args.harness_cmd)
    if args.dry_run:
      for run in runs:
        print(shlex.join([*cmd, *run.harness_args(results_dir)]))
      return 0
    counts = local.run_sweep(runs, results_dir, harness_cmd=cmd,
                             retry_failed=not args.skip_failed, timeout_s=args.timeout_s,
                             progress=not args.no_progress)
  print(f"{spec.name}: {counts.ok} ok, {counts.failed} failed, {counts.skipped} already done "
        f"-> {results_dir}/results.jsonl", file=sys.stderr)
  _print_wall_time(start)
  if not args.no_report:
    path = report.write_report(results_dir)
    for line in report.result_lines(report.load(results_dir)[1]):
      print(line, file=sys.stderr)
    for line in aot_gain.written_sentences(results_dir):
      print(line, file=sys.stderr)
    print(f"report: {path}", file=sys.stderr)
  return 1 if counts.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  start = time.monotonic()
  try:
    status = launch(args, start)
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted; rerun the same command to finish the sweep", file=sys.stderr)
    return 130
  return status


if __name__ == "__main__":
  sys.exit(main())
