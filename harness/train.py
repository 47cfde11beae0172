"""Train mode: restore or initialise, compile, run the timed loop with checkpoints."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp

from harness import loop
from harness.checkpoint import Checkpointer
from harness.data import make_batch_fn
from harness.steps import abstract_train_args

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PhaseResult:
  """What a train or eval phase measured."""
  times_s: list[float]
  compile_time_s: float
  last_metrics: dict[str, float]
  steps_run: int
  stopped_early: bool = False
  state: Any = None
  first_step: int = 0  # where this invocation started: > 0 after a resume


def initial_state(program, setup, mesh, ckpt: Checkpointer | None, resume: bool):
  """(params, opt_state, first step): the newest complete checkpoint, or a fresh init."""
  if ckpt is not None and resume and ckpt.latest_step() is not None:
    params, opt_state = abstract_train_args(program, setup, mesh)[:2]
    state, step = ckpt.restore({"params": params, "opt_state": opt_state})
    return state["params"], state["opt_state"], step
  params, opt_state = program.init(setup.seed)
  return params, opt_state, 0


def train(ctx, program, setup, ckpt: Checkpointer | None) -> PhaseResult:
  """Runs run.steps train steps (continuing a resumed run) and reports their timing."""
  run_cfg = ctx.run
  params, opt_state, first = initial_state(program, setup, ctx.mesh, ckpt, run_cfg.resume)
  if first >= run_cfg.steps:
    log.info("checkpoint at step %d already covers run.steps=%d", first, run_cfg.steps)
    return PhaseResult([], 0.0, {}, 0)
  batch_fn = make_batch_fn(setup.data, ctx.mesh)
  t0 = time.perf_counter()
  compiled = program.train_step.lower(params, opt_state, batch_fn(first), jnp.int32(first)).compile()
  compile_s = time.perf_counter() - t0
  ctx.window.add_hlo_text("train_step", compiled.as_text())
  times: list[float] = []
  last: dict[str, float] = {}

  poison = jax.jit(lambda b: jax.tree.map(lambda x: x * jnp.nan, b))

  def step_fn(state, step):
    batch = batch_fn(step)
    if step == run_cfg.poison_step:
      batch = poison(batch)
    p, o, metrics = compiled(*state, batch, jnp.int32(step))
    return (p, o), metrics

  def on_step(step, metrics, dt):
    if run_cfg.nan_check:
      loop.check_finite(step, metrics, "train")
    last.update(metrics)
    timed = step >= run_cfg.warmup_steps and not ctx.window.in_window(step)
    if timed:
      times.append(dt)
    ctx.log_step(step, dt, metrics, timed)

  def due(step):  # every N steps, and the final state so a finished run resumes as finished
    return ckpt is not None and ckpt.every > 0 and (
        (step + 1) % ckpt.every == 0 or step + 1 == run_cfg.steps)

  def save(step, state):
    if ckpt is not None:
      ckpt.maybe_save(step, {"params": state[0], "opt_state": state[1]}, force=True)

  bar = loop.progress_bar(run_cfg.steps, first, "train", run_cfg.progress)
  try:
    with loop.StopRequested() as stop:
      result = loop.run_loop(step_fn, (params, opt_state), first, run_cfg.steps, on_step=on_step,
                             window=ctx.window, stop=stop, sync_after=due, on_synced=save,
                             bar=bar)
  finally:
    if bar is not None:
      bar.close()
  return PhaseResult(times, compile_s, last, result.last_step + 1 - first, result.stopped_early,
                     result.state, first)
