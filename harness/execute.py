"""One attempt at a run: the phases of the configured mode and every output of DESIGN.md §3.3."""
from __future__ import annotations

import logging
import os
from typing import Callable

import jax

from harness import gin_config
from harness import metrics, phases, profiling, run_folder, steps, summary as summary_lib
from harness.checkpoint import Checkpointer
from harness.errors import UserError
from harness.flops import step_flops
from harness.outputs import EvalSummary, Summary, TimeStats, TraceReport
from harness.phases import NanError, PhaseContext

log = logging.getLogger(__name__)


class PeerFailure(RuntimeError):
  """A collective failed in a multi-process run: a peer died or lost its connection."""


def _step_logger(writer: metrics.MetricsWriter, tokens: int, flops: float, prefix: str):
  """Per-step records; TensorBoard's perf/ charts hold timed steps, the rest go to untimed/."""
  n_dev = jax.device_count()

  def log_step(step: int, dt: float, values: dict, timed: bool) -> None:
    record = {"step": step, "step_time_s": dt, "timed": timed, **values}
    tag = prefix if timed else f"{prefix}/untimed"
    scalars = {f"{tag}/step_time_seconds": dt, f"{tag}/tokens_per_second": tokens / dt,
               f"{tag}/per_device_tflops_per_sec": flops / dt / n_dev / 1e12}
    if "loss" in values:
      scalars["learning/loss"] = values["loss"]
    writer.step(record, scalars)

  return log_step


class _TensorBoardOnly:
  """Sends final-eval steps to TensorBoard only (metrics.jsonl holds the main phase)."""

  def __init__(self, writer):
    self._writer = writer
    self.enabled = writer.enabled

  def step(self, record, scalars):
    self._writer.scalars(scalars, record["step"])


def _analyze_trace(window, writer, extra: dict) -> None:
  """Overlap analysis of the newest capture into the summary, TensorBoard and the console."""
  if not window.captures:
    return
  try:
    result = profiling.analyze(window.captures[-1])
  except ValueError as err:  # an unreadable capture must not lose the run's other outputs
    log.warning("trace analysis failed: %s", err)
    extra["trace"] = TraceReport.failed(str(err))
    return
  extra["trace"] = TraceReport.from_json(result).without_steps()
  writer.scalars(profiling.trace_scalars(result), 0)
  if writer.enabled:
    print(profiling.format_table(result))


def _tokens(cfgs, mode: str) -> int:
  return cfgs.model.num_tokens(cfgs.video) * cfgs.run.batch_size * (2 if mode == "eval" else 1)


def _logger(cfgs, writer, mode: str, prefix: str):
  flops = step_flops(cfgs.model, cfgs.video, cfgs.run.batch_size, mode)
  return _step_logger(writer, _tokens(cfgs, mode), flops, prefix)


def _final_eval(cfgs, ctx: PhaseContext, program, params, writer) -> tuple[EvalSummary, bool]:
  """(summary entry, stopped early) of one timed sample after training."""
  eval_ctx = PhaseContext(ctx.run, ctx.mesh, ctx.window,
                          _logger(cfgs, _TensorBoardOnly(writer), "eval", "eval"), ctx.stop)
  setup = cfgs.setup
  phase = phases.denoise(eval_ctx, program, setup, params, setup.sampler.denoising_steps,
                         desc="final eval")
  entry = EvalSummary(step_time_s=TimeStats(**metrics.time_stats(phase.times_s)),
                      compile_time_s=phase.compile_time_s, denoising_steps=phase.steps_run,
                      final_metrics=phase.last_metrics)
  return entry, phase.stopped_early


def _eval_params(cfgs, program, mesh, claim):
  """Eval of a trained run restores its newest intact checkpoint; else fresh weights."""
  if claim.source_dir is None:
    return program.init(cfgs.run.seed)[0]
  ckpt = Checkpointer(claim.source_dir / "checkpoints", 0, read_only=True,
                      fingerprint=None)
  if ckpt.latest_step() is None:
    raise UserError(f"run.mode='eval': {claim.source_dir} holds a train run without "
                    f"checkpoints (run.checkpoint_every=0); nothing to evaluate")
  params, opt_state = steps.abstract_train_args(program, cfgs.setup, mesh)[:2]
  state, step = ckpt.restore({"params": params, "opt_state": opt_state})
  print(f"evaluating the checkpoint of step {step} in {claim.source_dir}", flush=True)
  claim.record.setdefault("source", {})["checkpoint_step"] = step
  return state["params"]


def _run_phases(cfgs, ctx: PhaseContext, program, ckpt, writer, claim):
  """(phase, status, error, extra summary entries) of the configured mode."""
  phase, status, error, extra = None, "ok", None, {}
  try:
    with ctx.window:
      if cfgs.run.mode == "train":
        phase = phases.train(ctx, program, cfgs.setup, ckpt)
        if cfgs.run.final_eval and not phase.stopped_early:
          extra["eval"], stopped = _final_eval(cfgs, ctx, program, phase.state[0], writer)
          if stopped:  # keep the trained state, so running again repeats only the eval
            ckpt.maybe_save(phase.first_step + phase.steps_run,
                            {"params": phase.state[0], "opt_state": phase.state[1]}, force=True)
          phase.stopped_early |= stopped
      else:
        phase = phases.denoise(ctx, program, cfgs.setup, _eval_params(cfgs, program, ctx.mesh,
                                                                       claim), cfgs.run.steps)
      status = "preempted" if phase.stopped_early or ctx.stop.requested else "ok"
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


def _open_outputs(cfgs, claim, is_main: bool):
  """The metrics writer (metrics.jsonl continued once the first step is known); config.gin."""
  writer = metrics.MetricsWriter(claim.run_dir, enabled=is_main, resume_step=None)
  operative = gin_config.operative_config()
  if is_main:
    (claim.run_dir / "config.gin").write_text(operative)
    writer.text("config/operative_gin", operative)
  return writer


def execute(loaded, claim, stop) -> dict:
  """Runs the configured mode in the claimed folder; writes outputs (process 0) even on failure."""
  cfgs, mesh = loaded.configs, loaded.mesh
  is_main = jax.process_index() == 0
  ckpt = None
  if cfgs.run.mode == "train":
    # Checkpoints are always possible in train mode: every N steps, and on SIGTERM even when N=0.
    ckpt = Checkpointer(claim.run_dir / "checkpoints", cfgs.run.checkpoint_every,
                        fingerprint=claim.record.get("fingerprint"))
  window = cfgs.profiler.window(str(claim.run_dir / "tensorboard"), jax.process_index())
  program = loaded.program
  writer = _open_outputs(cfgs, claim, is_main)
  ctx = PhaseContext(cfgs.run, mesh, window, _logger(cfgs, writer, cfgs.run.mode, "perf"), stop,
                     begin=writer.start)
  try:
    phase, status, error, extra = _run_phases(cfgs, ctx, program, ckpt, writer, claim)
    _analyze_trace(window, writer, extra)
  finally:
    writer.close()
  typed = summary_lib.build_run_summary(cfgs, mesh, claim, phase, steps.count_params(
      program.abstract_params), status, error, extra.get("eval"), extra.get("trace"))
  summary = typed.to_json()
  if is_main:
    metrics.write_json_atomic(claim.run_dir / "summary.json", summary)
    _record_progress(cfgs, claim, phase, summary)
    print(summary_lib.console_report(typed, claim.run_dir))
  if status == "nan":
    raise NanError(error)
  if status == "failed":
    raise PeerFailure(error)
  if status == "preempted" and not (phase and phase.steps_run):
    print("stopped by SIGTERM before the first step; nothing to save, exiting cleanly")
  elif status == "preempted" and cfgs.run.mode == "train":
    stopped = phase.first_step + phase.steps_run  # the checkpoint's step, counting resumed runs
    print(f"stopped by SIGTERM after step {stopped}; checkpoint saved, exiting cleanly")
  elif status == "preempted":
    print(f"stopped by SIGTERM after {phase.steps_run if phase else 0} steps, exiting cleanly")
  return summary


def _record_progress(cfgs, claim, phase, summary: dict) -> None:
  if phase is not None and cfgs.run.mode == "train":
    claim.progress["steps"] = phase.first_step + phase.steps_run
  elif phase is not None and summary["status"] == "ok":
    claim.progress["steps"] = phase.steps_run
  if cfgs.run.mode == "train" and summary.get("eval", {}).get("step_time_s", {}).get("n"):
    claim.progress["final_eval"] = 1


def attempt(claim, body: Callable[[], dict], lock_handle) -> dict:
  """Runs one attempt and records how it ended in run.json, also when it raises."""
  try:
    result = body()
  except BaseException as err:
    status = {NanError: "nan", PeerFailure: "failed"}.get(type(err), "error")
    if isinstance(err, KeyboardInterrupt):
      status = "interrupted"
    message = (str(err).splitlines() or [type(err).__name__])[0]
    if status in ("error", "interrupted"):  # nan and failed runs wrote a full summary already
      _write_failure(claim, status, message)
    _end(claim, status, message)
    raise
  else:
    _end(claim, result.get("status", "ok") if isinstance(result, dict) else "ok",
         result.get("error") if isinstance(result, dict) else None)
    return result
  finally:
    if lock_handle is not None:
      lock_handle.close()


def _write_failure(claim, status: str, message: str) -> None:
  """summary.json of an attempt that ended in an exception (the last one is archived)."""
  if not claim.record.get("attempts"):
    return  # not process 0, or refused before the attempt began: nothing is written
  failure = Summary.failure(status, message, claim.record.get("mode"),
                            claim.record.get("fingerprint"), claim.attempt)
  try:
    metrics.write_json_atomic(claim.run_dir / "summary.json", failure.to_json())
  except OSError as err:
    log.warning("cannot write %s: %s", claim.run_dir / "summary.json", err.strerror)


def _end(claim, status: str, error: str | None) -> None:
  if claim.record.get("attempts") and claim.record["attempts"][-1].get("status") == "running":
    try:
      run_folder.end_attempt(claim, status, error)
    except run_folder.RunFolderError as err:  # e.g. a full disk: the original error matters more
      log.warning("%s", err)


def _nan_message(err: Exception, cfgs) -> str:
  a = cfgs.attention
  return (f"non-finite {err}; attention.variant={a.variant} num_chunks={a.num_chunks} "
          f"kernel={a.kernel}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} "
          f"LIBTPU_INIT_ARGS={os.environ.get('LIBTPU_INIT_ARGS', '')!r}")


def _peer_message(err: Exception) -> str:
  first = (str(err).splitlines() or [type(err).__name__])[0]
  return (f"a collective failed in a {jax.process_count()}-process run (a peer process died or "
          f"lost its connection): {first}")
