"""Runs a sweep on a GKE cluster through the `xpk` command line, one workload per run."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shlex
import subprocess
import sys
from typing import Sequence

import tqdm
from etils import epath

from harness import gin_config
from launch import results
from launch.local import Counts, exclusive, plan
from launch.sweep import Run

PRIORITIES = ("very-low", "low", "medium", "high", "very-high")
# Small outputs copied next to results.jsonl; traces and checkpoints stay in the output dir.
COLLECTED_FILES = ("summary.json", "aot.json", "config.gin", "metrics.jsonl")
TAIL_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class XpkOptions:
  """Cluster-side settings from the command line."""
  cluster: str | None = None
  project: str | None = None
  zone: str | None = None
  docker_image: str | None = None
  base_docker_image: str | None = None
  max_restarts: int | None = None
  priority: str | None = None
  num_slices: int | None = None  # overrides sweep.hardware's
  env: tuple[str, ...] = ()  # extra K=V for the container
  storage: tuple[str, ...] = ()  # xpk storages (e.g. a GCS FUSE mount) the workload uses
  xpk: str = "xpk"
  python: str = "python"  # the interpreter inside the image
  wait_timeout_s: int | None = None
  # LIBTPU_INIT_ARGS shown on the command line, read by the local harness from the run's gin.
  # Off with --skip_binding_check (bindings the local harness may not know): the harness in the
  # container still applies its hardware.libtpu_flags itself before the TPU starts.
  read_flags: bool = True

  def check(self) -> None:
    """One-line errors for settings xpk would reject later, after a network round trip."""
    if not self.cluster:
      raise ValueError("--backend xpk needs --cluster (the GKE cluster created with xpk)")
    if bool(self.docker_image) == bool(self.base_docker_image):
      raise ValueError("--backend xpk needs exactly one of --docker_image (built from "
                       "launch/Dockerfile) or --base_docker_image")
    if self.priority is not None and self.priority not in PRIORITIES:
      raise ValueError(f"--priority={self.priority}: choose one of {', '.join(PRIORITIES)}")
    for item in self.env:
      if "=" not in item:
        raise ValueError(f"--env={item}: expected KEY=VALUE")


def libtpu_init_args(gin_files: Sequence[str], bindings: Sequence[str] = ()) -> str | None:
  """LIBTPU_INIT_ARGS of a real run of these gin files and bindings, as the harness reads them
  (its `hardware` section; aot.libtpu_flags is for AOT compiles only); None when there are none."""
  return gin_config.check_bindings(list(gin_files), list(bindings)).hardware.init_args() or None


def remote_command(run: Run, output_dir: str, python: str = "python") -> str:
  """The container's shell command: `python -m harness ...`, each argument quoted."""
  argv = [python, "-m", "harness", *run.harness_args(output_dir)]
  for arg in argv:
    if "\n" in arg or "\r" in arg:
      # xpk 1.16 pastes --command into a YAML block scalar, where a line break would end it.
      raise ValueError(f"run {run.name}: binding {arg!r} has a line break, which xpk cannot "
                       "carry; write it on one line")
  return shlex.join(argv)


def create_argv(run: Run, opts: XpkOptions, output_dir: str) -> list[str]:
  """`workload create ...` for one run (without the xpk executable)."""
  if not run.hardware.tpu_type:
    raise ValueError(f"run {run.name}: sweep.hardware has no tpu_type for --backend xpk")
  argv = ["workload", "create", "--cluster", opts.cluster, "--workload", run.name,
          "--tpu-type", run.hardware.tpu_type,
          "--num-slices", str(opts.num_slices or run.hardware.num_slices)]
  if opts.docker_image:
    argv += ["--docker-image", opts.docker_image]
  else:
    argv += ["--base-docker-image", opts.base_docker_image]
  argv += ["--command", remote_command(run, output_dir, opts.python)]
  flags = libtpu_init_args(run.gin_files, run.bindings) if opts.read_flags else None
  if flags:
    argv += ["--env", f"LIBTPU_INIT_ARGS={flags}"]
  for item in opts.env:
    argv += ["--env", item]
  for name in opts.storage:
    argv += ["--storage", name]
  if opts.max_restarts is not None:
    argv += ["--max-restarts", str(opts.max_restarts)]
  if opts.priority:
    argv += ["--priority", opts.priority]
  return argv + _location(opts)


def _location(opts: XpkOptions) -> list[str]:
  argv = ["--project", opts.project] if opts.project else []
  return argv + (["--zone", opts.zone] if opts.zone else [])


def wait_argv(run: Run, opts: XpkOptions) -> list[str]:
  """`workload list --wait-for-job-completion NAME`: exits 0 done, 125 failed, 124 timed out."""
  argv = ["workload", "list", "--cluster", opts.cluster, "--wait-for-job-completion", run.name]
  if opts.wait_timeout_s:
    argv += ["--timeout", str(opts.wait_timeout_s)]
  return argv + _location(opts)


def _xpk(opts: XpkOptions, argv: Sequence[str]) -> subprocess.CompletedProcess:
  env = dict(os.environ, TELEMETRY_ENABLED="false")
  try:
    return subprocess.run([opts.xpk, *argv], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)
  except FileNotFoundError:
    raise ValueError(f"--xpk={opts.xpk}: no such executable (pip install xpk==1.16.0 in "
                     "its own virtualenv and pass its path)") from None


def _tail(proc: subprocess.CompletedProcess) -> str:
  return ((proc.stdout or "") + (proc.stderr or ""))[-TAIL_CHARS:]


def collect(run: Run, output_dir: str, results_dir: pathlib.Path) -> None:
  """Copies a run's small outputs from the output dir (local or gs://) beside results.jsonl."""
  source, target = epath.Path(output_dir) / run.name, results_dir / run.name
  if str(source) == str(target):
    return
  target.mkdir(parents=True, exist_ok=True)
  for name in COLLECTED_FILES:
    if (source / name).exists():
      (target / name).write_bytes((source / name).read_bytes())


def print_commands(runs: Sequence[Run], opts: XpkOptions, output_dir: str) -> None:
  """--dry_run: each `xpk workload create` on its own line, ready to paste into a shell."""
  for run in runs:
    print(shlex.join([opts.xpk, *create_argv(run, opts, output_dir)]))


def run_sweep(runs: Sequence[Run], opts: XpkOptions, results_dir: str | os.PathLike,
              output_dir: str, *, collect_dir: str | None = None,
              progress: bool = True) -> Counts:
  """Submits every run not done yet, waits for each, and records what it wrote.

  `output_dir` is run.output_dir as the container sees it; `collect_dir` is the same place as
  this machine sees it (e.g. gs://bucket/x for a GCS FUSE mount at /gcs/x), default the same.
  """
  results_dir, counts = pathlib.Path(results_dir), Counts()
  argvs = {run.name: create_argv(run, opts, output_dir) for run in runs}  # errors before any submit
  output_dir = collect_dir or output_dir
  with exclusive(results_dir):
    store = results.ResultsFile(results_dir / results.RESULTS_FILE)
    records, submitted = store.load(), []
    for run in runs:
      action, record = plan(run, records.get(run.name), epath.Path(output_dir) / run.name, True)
      if action == "skip":
        counts.skipped += 1
      elif action == "adopt":
        collect(run, output_dir, results_dir)
        store.put(record)
        counts.ok += 1
      else:
        proc = _xpk(opts, argvs[run.name])
        if proc.returncode == 0:
          submitted.append(run)
          continue
        store.put(results.make_record(run, "failed", returncode=proc.returncode,
                                      error="xpk workload create failed:\n" + _tail(proc),
                                      output_dir=output_dir))
        counts.failed += 1
    for run in tqdm.tqdm(submitted, unit="run", file=sys.stderr, disable=not progress):
      proc = _xpk(opts, wait_argv(run, opts))
      complete, summary, aot = results.read_outputs(epath.Path(output_dir) / run.name, run.mode)
      collect(run, output_dir, results_dir)
      if proc.returncode == 0 and complete:
        store.put(results.make_record(run, "ok", summary=summary, aot=aot, returncode=0,
                                      output_dir=output_dir))
        counts.ok += 1
      else:
        error = (f"workload ended with xpk status {proc.returncode} "
                 f"(124 timed out, 125 failed); summary complete: {complete}\n" + _tail(proc))
        store.put(results.make_record(run, "failed", summary=summary, aot=aot, error=error,
                                      returncode=proc.returncode, output_dir=output_dir))
        counts.failed += 1
  return counts
