"""Runs train or eval mode on a mesh and writes every output of DESIGN.md §3.3."""
from __future__ import annotations

import dataclasses
import logging
import os
import sys

import jax

from harness import config as config_lib
from harness import metrics, steps, summary as summary_lib
from harness.checkpoint import Checkpointer
from harness.context import RunContext
from harness.evaluate import denoise
from harness.flops import step_flops
from harness.loop import NanError
from harness.profiler_window import ProfilerWindow
from harness.train import train

log = logging.getLogger(__name__)


def _step_logger(writer: metrics.MetricsWriter, cfgs, tokens: int, flops: float, prefix: str):
  n_dev = jax.device_count()

  def log_step(step: int, dt: float, values: dict, timed: bool) -> None:
    record = {"step": step, "step_time_s": dt, "timed": timed, **values}
    scalars = {f"{prefix}/step_time_seconds": dt, f"{prefix}/tokens_per_second": tokens / dt,
               f"{prefix}/per_device_tflops_per_sec": flops / dt / n_dev / 1e12}
    if "loss" in values:
      scalars["learning/loss"] = values["loss"]
    writer.step(record, scalars)

  return log_step


def _analyze_trace(window, writer, summary: dict) -> None:
  """Overlap analysis of the newest capture into summary.json, TensorBoard and the console."""
  if not window.captures:
    return
  from harness import profiling
  try:
    result = profiling.analyze(window.captures[-1])
  except ValueError as err:  # an unreadable capture must not lose the run's other outputs
    log.warning("trace analysis failed: %s", err)
    summary["trace"] = {"error": str(err)}
    return
  summary["trace"] = {k: v for k, v in result.items() if k != "per_step"}
  writer.scalars(profiling.trace_scalars(result), 0)
  if writer.enabled:
    print(profiling.format_table(result))


def _final_eval(cfgs, ctx, program, params, writer) -> dict:
  setup = cfgs.setup
  flops = _flops(cfgs, "eval")
  tokens = cfgs.model.num_tokens(cfgs.video) * cfgs.run.batch_size * 2
  eval_ctx = dataclasses.replace(
      ctx, log_step=_step_logger(_EvalOnly(writer), cfgs, tokens, flops, "eval"))
  phase = denoise(eval_ctx, program, setup, params, setup.sampler.denoising_steps,
                  desc="final eval")
  return {"step_time_s": metrics.time_stats(phase.times_s), "compile_time_s": phase.compile_time_s,
          "denoising_steps": phase.steps_run, "final_metrics": phase.last_metrics}


class _EvalOnly:
  """Sends final-eval steps to TensorBoard only (metrics.jsonl holds the main phase)."""

  def __init__(self, writer):
    self._writer = writer
    self.enabled = writer.enabled

  def step(self, record, scalars):
    self._writer.scalars(scalars, record["step"])


def _flops(cfgs, mode: str) -> float:
  return step_flops(cfgs.model, cfgs.video, cfgs.run.batch_size, mode)


def _open_outputs(cfgs, is_main: bool):
  """Run folder, checkpointer (train mode) and metrics writer; config.gin written first."""
  run_dir = cfgs.run_dir
  try:  # every process writes its part of each checkpoint here
    run_dir.mkdir(parents=True, exist_ok=True)
  except OSError as err:
    raise ValueError(f"run.output_dir={cfgs.run.output_dir!r}: cannot create {run_dir} "
                     f"({err.strerror})") from None
  # In train mode checkpoints are always possible: every N steps, and on SIGTERM even when N=0.
  ckpt = (Checkpointer(run_dir / "checkpoints", cfgs.run.checkpoint_every,
                       fresh=not cfgs.run.resume) if cfgs.run.mode == "train" else None)
  resume_step = (ckpt.latest_step() or 0) if ckpt is not None else 0
  writer = metrics.MetricsWriter(run_dir, enabled=is_main, resume_step=resume_step)
  operative = config_lib.operative_config()
  if is_main:
    (run_dir / "config.gin").write_text(operative)
    writer.text("config/operative_gin", operative)
  return ckpt, writer


def _run_phases(cfgs, ctx, program, ckpt, writer):
  """(phase, status, error, extra summary entries) of the configured mode."""
  phase, status, error, extra = None, "ok", None, {}
  try:
    with ctx.window:
      if cfgs.run.mode == "train":
        phase = train(ctx, program, cfgs.setup, ckpt)
        if cfgs.run.final_eval and phase.state is not None and not phase.stopped_early:
          extra["eval"] = _final_eval(cfgs, ctx, program, phase.state[0], writer)
      else:
        params, _ = program.init(cfgs.run.seed)
        phase = denoise(ctx, program, cfgs.setup, params, cfgs.run.steps)
      status = "preempted" if phase.stopped_early else "ok"
  except NanError as err:
    status, error = "nan", _nan_message(err, cfgs)
  except jax.errors.JaxRuntimeError as err:
    if jax.process_count() == 1:
      raise
    status, error = "failed", _peer_message(err)
  finally:
    # After a failed collective, orbax's commit barrier would wait for the missing peer.
    if ckpt is not None and status != "failed":
      ckpt.close()
  return phase, status, error, extra


def execute(cfgs, mesh) -> dict:
  """Runs the configured mode; writes outputs (process 0) even when the run fails."""
  is_main = jax.process_index() == 0
  ckpt, writer = _open_outputs(cfgs, is_main)
  mode = cfgs.run.mode
  tokens = cfgs.model.num_tokens(cfgs.video) * cfgs.run.batch_size * (2 if mode == "eval" else 1)
  p = cfgs.profiler
  window = ProfilerWindow(str(cfgs.run_dir / "tensorboard"), enabled=p.enabled,
                          start_step=p.start_step, num_steps=p.num_steps, all_hosts=p.all_hosts,
                          process_index=jax.process_index())
  ctx = RunContext(cfgs.run, mesh, window,
                   _step_logger(writer, cfgs, tokens, _flops(cfgs, mode), "perf"))
  program = steps.build_program(cfgs.setup, mesh)
  phase, status, error, extra = _run_phases(cfgs, ctx, program, ckpt, writer)
  summary = summary_lib.build_summary(cfgs, mesh, phase, steps.count_params(
      program.abstract_params), status, error)
  summary.update(extra)
  _analyze_trace(window, writer, summary)
  if is_main:
    metrics.write_json_atomic(cfgs.run_dir / "summary.json", summary)
    print(summary_lib.console_report(summary, cfgs.run_dir))
  writer.close()
  if status == "nan":
    raise NanError(error)
  if status == "failed":
    _exit_without_peer(error)
  if status == "preempted":
    stopped = phase.first_step + phase.steps_run  # the checkpoint's step, counting resumed runs
    print(f"stopped by SIGTERM after step {stopped}; checkpoint saved, exiting cleanly")
  return summary


def _nan_message(err: Exception, cfgs) -> str:
  a = cfgs.attention
  return (f"non-finite {err}; attention.variant={a.variant} num_chunks={a.num_chunks} "
          f"kernel={a.kernel}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} "
          f"LIBTPU_INIT_ARGS={os.environ.get('LIBTPU_INIT_ARGS', '')!r}")


def _peer_message(err: Exception) -> str:
  first = (str(err).splitlines() or [type(err).__name__])[0]
  return (f"a collective failed in a {jax.process_count()}-process run (a peer process died or "
          f"lost its connection): {first}")


def _exit_without_peer(error: str) -> None:
  """Exits with code 4 at once: with a peer gone, JAX's shutdown barrier at exit would abort."""
  sys.stdout.flush()
  print(f"error: {error}", file=sys.stderr, flush=True)
  os._exit(4)
