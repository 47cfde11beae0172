"""Builds summary.json (harness.outputs.Summary) and the one-screen report; the --dry_run report."""
from __future__ import annotations

import dataclasses
import json
import pathlib

import jax

from harness import flops as flops_lib
from harness import gin_config
from harness import metrics, outputs, steps, versions
from harness.outputs import Attention, Devices, EvalSummary, Summary, TimeStats, TraceReport
from harness.mesh import param_shardings


def _human(n: float, unit: str = "") -> str:
  for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(n) >= scale:
      return f"{n / scale:.3g} {suffix}{unit}"
  return f"{n:.3g} {unit}"


def build_summary(cfgs, mesh, phase, params: int, status: str, error: str | None = None) -> Summary:
  """The contract of DESIGN.md §3.3 plus what the result depends on."""
  mode = cfgs.run.mode
  batch = cfgs.run.batch_size
  step_flops = flops_lib.step_flops(cfgs.model, cfgs.video, batch, mode)
  stats = metrics.time_stats(phase.times_s if phase else [])
  med = stats["median"]
  tokens = cfgs.model.num_tokens(cfgs.video) * batch * (1 if mode == "train" else 2)
  devices = jax.devices()
  env = versions.environment()
  a = cfgs.attention
  return Summary(
      status=status, error=error, mode=mode, run_name=cfgs.run.run_name,
      attention=Attention(variant=a.variant, num_chunks=a.num_chunks, kernel=a.kernel,
                          ulysses_degree=a.ulysses_degree, packed_qkv=a.packed_qkv,
                          pipelined_projections=a.pipelined_projections),
      mesh=dict(mesh.shape),
      devices=Devices(platform=devices[0].platform, count=len(devices),
                      kind=devices[0].device_kind, processes=jax.process_count()),
      model=dataclasses.asdict(cfgs.model), video=dataclasses.asdict(cfgs.video),
      sequence_length=cfgs.model.num_tokens(cfgs.video), batch_size=batch, seed=cfgs.run.seed,
      step_time_s=TimeStats(**stats),
      step_times_s=list(phase.times_s) if phase else [],
      compile_time_s=phase.compile_time_s if phase else None,
      steps_run=phase.steps_run if phase else 0,
      tokens_per_second=tokens / med if med == med and med > 0 else None,
      params=params, flops_per_step=step_flops,
      per_device_tflops_per_sec=(step_flops / med / len(devices) / 1e12
                                 if med == med and med > 0 else None),
      final_metrics=phase.last_metrics if phase else {},
      versions=env["versions"], git_commit=env["git_commit"], xla_flags=env["XLA_FLAGS"],
      libtpu_init_args=env["LIBTPU_INIT_ARGS"])


def read_json(path: pathlib.Path) -> dict | None:
  """A JSON object written earlier, or None if missing or unreadable."""
  try:
    value = json.loads(path.read_text())
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def build_run_summary(cfgs, mesh, claim, phase, params: int, status: str, error: str | None,
                      eval_entry: EvalSummary | None = None,
                      trace: TraceReport | None = None) -> Summary:
  """The summary of every segment of the run so far: timed steps from metrics.jsonl.

  A continued run's earlier segments are in metrics.jsonl (each step once, each flagged timed or
  not when it ran), so the statistics cover them all; what this attempt did not produce (the
  final eval, a trace) is carried over from the previous summary.
  """
  summary = build_summary(cfgs, mesh, phase, params, status, error)
  if cfgs.run.mode == "train" and phase is not None:
    records = metrics.read_records(claim.run_dir / "metrics.jsonl")
    times = [r["step_time_s"] for r in records if r.get("timed")]
    summary.step_time_s = TimeStats(**metrics.time_stats(times))
    summary.step_times_s = times
    summary.steps_completed = phase.first_step + phase.steps_run
    _set_throughput(summary, cfgs)
  previous = outputs.read(Summary, claim.run_dir / "summary.json")
  if previous is not None and previous.fingerprint == claim.record.get("fingerprint"):
    eval_entry = eval_entry or previous.eval
    trace = trace or previous.trace
    if not summary.compile_time_s:
      summary.compile_time_s = previous.compile_time_s
  summary.eval, summary.trace = eval_entry, trace
  summary.fingerprint = claim.record.get("fingerprint")
  summary.attempt = claim.attempt
  summary.first_step = phase.first_step if phase is not None else 0
  if claim.record.get("source"):
    summary.source = dict(claim.record["source"], run_dir=str(claim.source_dir))
  return summary


def _set_throughput(summary: Summary, cfgs) -> None:
  med, n_dev = summary.step_time_s.median, summary.devices.count
  ok = med == med and med > 0
  tokens = cfgs.model.num_tokens(cfgs.video) * cfgs.run.batch_size
  summary.tokens_per_second = tokens / med if ok else None
  summary.per_device_tflops_per_sec = summary.flops_per_step / med / n_dev / 1e12 if ok else None


def console_report(summary: Summary, run_dir) -> str:
  """The one-screen summary printed at the end of a run."""
  a, st = summary.attention, summary.step_time_s
  lines = [
      f"run {summary.run_name}: {summary.mode} {summary.status}",
      f"  attention   {a.variant} chunks={a.num_chunks} kernel={a.kernel}",
      f"  mesh        {' '.join(f'{k}={v}' for k, v in summary.mesh.items())} "
      f"on {summary.devices.count} {summary.devices.platform} devices",
      f"  step time   median {st.median * 1e3:.2f} ms (p10 {st.p10 * 1e3:.2f}, "
      f"p90 {st.p90 * 1e3:.2f}, n={st.n}); compile {summary.compile_time_s or 0:.1f} s",
  ]
  if summary.tokens_per_second:
    lines.append(f"  throughput  {_human(summary.tokens_per_second)}tokens/s, "
                 f"{summary.per_device_tflops_per_sec:.4g} TFLOP/s per device")
  if summary.final_metrics:
    lines.append("  last        " + ", ".join(
        f"{k}={v:.4g}" for k, v in summary.final_metrics.items()))
  if summary.eval and summary.eval.step_time_s:
    ev = summary.eval.step_time_s
    lines.append(f"  eval        {ev.median * 1e3:.2f} ms per denoising step (n={ev.n})")
  if summary.trace:
    tr = summary.trace
    lines.append(f"  trace       collective {(tr.collective_s or 0) * 1e3:.2f} ms, exposed "
                 f"{(tr.exposed_collective_s or 0) * 1e3:.2f} ms, overlap "
                 f"{tr.overlap_fraction or 0:.2f}")
  lines += [f"  outputs     {run_dir}",
            f"  view        tensorboard --logdir {run_dir / 'tensorboard'}"]
  return "\n".join(lines)


def dry_run_report(cfgs, mesh, files) -> str:
  """Resolved config, parameter count, FLOPs and a per-device memory estimate; no allocation."""
  _, abstract = steps.abstract_model(cfgs.model)
  n_params = steps.count_params(abstract)
  mem = flops_lib.memory_estimate(cfgs.model, cfgs.video, cfgs.run.batch_size, cfgs.run.mode,
                                  abstract, param_shardings(abstract, mesh), mesh)
  step_flops = flops_lib.step_flops(cfgs.model, cfgs.video, cfgs.run.batch_size, cfgs.run.mode)
  return "\n".join([
      "# gin files: " + ", ".join(files),
      gin_config.operative_config().rstrip(),
      "",
      f"parameters:           {n_params:,} ({_human(n_params)})",
      f"sequence length:      {cfgs.model.num_tokens(cfgs.video):,} tokens",
      f"mesh:                 {dict(mesh.shape)}",
      f"FLOPs per {cfgs.run.mode} step:  {step_flops:.4g}",
      f"memory per device:    ~{mem['total_bytes'] / 2**30:.2f} GiB "
      f"(state {mem['state_bytes'] / 2**30:.2f} GiB, activations "
      f"{mem['activation_bytes'] / 2**30:.2f} GiB; an estimate)",
  ])
