"""Train and eval phases over one timed loop: compile, step, time, guard, checkpoint, stop."""
from __future__ import annotations

import dataclasses
import logging
import math
import signal
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from tqdm import tqdm

from harness import diffusion
from harness.checkpoint import Checkpointer
from harness.data import make_batch_fn
from harness.mesh import batch_sharding
from harness.steps import abstract_train_args

log = logging.getLogger(__name__)

LogStep = Callable[[int, float, dict, bool], None]  # (step, seconds, metrics, timed)


class NanError(RuntimeError):
  """A metric became NaN or Inf."""


class StopRequested:
  """Turns SIGTERM (preemption) into a request to stop after the current step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: nobody can deliver SIGTERM to us anyway
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


@dataclasses.dataclass(frozen=True)
class PhaseContext:
  """What a phase needs from the run around it."""
  run: Any  # harness.configs.RunConfig
  mesh: Any
  window: Any  # harness.profiling.ProfilerWindow
  log_step: LogStep
  stop: StopRequested
  begin: Callable[[int], None] = lambda first: None  # the first step this phase will run


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


def check_finite(step: int, metrics: dict[str, float], where: str) -> None:
  # The loss goes first: metrics arrive sorted by name, and NaN inputs poison all of them.
  for name in sorted(metrics, key=lambda n: n != "loss"):
    value = metrics[name]
    if not math.isfinite(value):
      raise NanError(f"{name}={value} at step {step} ({where})")


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
  """A tqdm bar on a terminal of process 0, else None."""
  if not (enabled and sys.stderr.isatty() and jax.process_index() == 0):
    return None
  return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)


def compile_step(jitted, args: tuple, name: str, window) -> tuple[Any, float]:
  """Compiles with a console line before and after (compiles take tens of seconds on CPU)."""
  announce = jax.process_index() == 0
  if announce:
    print(f"compiling {name} ...", flush=True)
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - t0
  if announce:
    print(f"compiled {name} in {seconds:.1f} s", flush=True)
  window.add_hlo_text(name, compiled.as_text())
  return compiled, seconds


@dataclasses.dataclass
class _Timer:
  """Keeps warm-up steps (after every compile) and profiled steps out of the timing."""
  ctx: PhaseContext
  first: int
  warmup: int
  where: str
  times: list[float] = dataclasses.field(default_factory=list)
  last: dict[str, float] = dataclasses.field(default_factory=dict)

  def __call__(self, step: int, metrics: dict[str, float], dt: float) -> None:
    if self.ctx.run.nan_check:
      check_finite(step, metrics, self.where)
    self.last.update(metrics)
    timed = step - self.first >= self.warmup and not self.ctx.window.in_window(step)
    if timed:
      self.times.append(dt)
    self.ctx.log_step(step, dt, metrics, timed)


def run_loop(step_fn, state: Any, first: int, last: int, *, on_step, ctx: PhaseContext,
             sync_after: Callable[[int], bool] = lambda _: False,
             on_synced: Callable[[int, Any], None] = lambda *_: None,
             desc: str = "train") -> tuple[Any, int, bool]:
  """Runs steps [first, last); returns (state, last step fetched, stopped early).

  Step i's metrics are fetched after step i+1 is dispatched, so step time = time between
  consecutive completions and host work overlaps device work. `sync_after(i)` forces step i to
  be fetched before i+1 is dispatched, then `on_synced(i + 1, state)` runs (checkpoints).
  """
  window, stop = ctx.window, ctx.stop
  bar = progress_bar(last, first, desc, ctx.run.progress)
  pending, last_fetched, clock = None, first - 1, [time.perf_counter()]

  def finish(step: int, metrics: dict) -> None:
    nonlocal last_fetched
    host = {k: float(v) for k, v in jax.device_get(metrics).items()}
    now = time.perf_counter()
    on_step(step, host, now - clock[0])
    clock[0], last_fetched = now, step
    if bar is not None:
      bar.update(1)
      bar.set_postfix({k: f"{v:.4g}" for k, v in host.items()}, refresh=False)

  try:
    for step in range(first, last):
      if stop.requested:  # e.g. SIGTERM while compiling: stop before doing any work
        break
      window.before_step(step)
      with window.step_annotation(step):
        state, metrics = step_fn(state, step)
      if pending is not None:
        finish(*pending)
      pending = (step, metrics)
      window.after_step(step, metrics)
      if sync_after(step) or stop.requested:
        finish(*pending)
        pending = None
        on_synced(step + 1, state)
        clock[0] = time.perf_counter()  # keep checkpoint I/O out of the next step's time
    if pending is not None:
      finish(*pending)
  finally:
    if bar is not None:
      bar.close()
  return state, last_fetched, stop.requested and last_fetched + 1 < last


def initial_state(program, setup, mesh, ckpt: Checkpointer | None, resume: bool):
  """(params, opt_state, first step): the newest intact checkpoint, or a fresh init."""
  if ckpt is not None and resume and ckpt.latest_step() is not None:
    params, opt_state = abstract_train_args(program, setup, mesh)[:2]
    state, step = ckpt.restore({"params": params, "opt_state": opt_state})
    return state["params"], state["opt_state"], step
  params, opt_state = program.init(setup.seed)
  return params, opt_state, 0


def train(ctx: PhaseContext, program, setup, ckpt: Checkpointer | None) -> PhaseResult:
  """Runs train steps up to run.steps (continuing a resumed run) and reports their timing."""
  run_cfg = ctx.run
  params, opt_state, first = initial_state(program, setup, ctx.mesh, ckpt, run_cfg.resume)
  ctx.begin(first)
  if first >= run_cfg.steps:
    log.info("checkpoint at step %d already covers run.steps=%d", first, run_cfg.steps)
    return PhaseResult([], 0.0, {}, 0, state=(params, opt_state), first_step=first)
  batch_fn = make_batch_fn(setup.data, ctx.mesh)
  compiled, compile_s = compile_step(
      program.train_step, (params, opt_state, batch_fn(first), jnp.int32(first)), "train_step",
      ctx.window)
  poison = jax.jit(lambda b: jax.tree.map(lambda x: x * jnp.nan, b))

  def step_fn(state, step):
    batch = batch_fn(step)
    if step == run_cfg.poison_step:
      batch = poison(batch)
    p, o, metrics = compiled(*state, batch, jnp.int32(step))
    return (p, o), metrics

  def due(step):  # every N steps, and the final state so a finished run resumes as finished
    return ckpt is not None and ckpt.every > 0 and (
        (step + 1) % ckpt.every == 0 or step + 1 == run_cfg.steps)

  def save(step, state):
    if ckpt is not None:
      ckpt.maybe_save(step, {"params": state[0], "opt_state": state[1]}, force=True)

  # Every segment's first step after its compile is a warm-up step, also after a resume.
  timer = _Timer(ctx, first, max(run_cfg.warmup_steps, 1 if first else 0), "train")
  state, last, stopped = run_loop(step_fn, (params, opt_state), first, run_cfg.steps,
                                  on_step=timer, ctx=ctx, sync_after=due, on_synced=save)
  return PhaseResult(timer.times, compile_s, timer.last, last + 1 - first, stopped, state, first)


def denoise(ctx: PhaseContext, program, setup, params, num_steps: int,
            desc: str = "eval") -> PhaseResult:
  """Runs `num_steps` denoising steps (restarting from noise every sampler.denoising_steps)."""
  ctx.begin(0)
  n = setup.sampler.denoising_steps
  sigmas = [float(s) for s in diffusion.sigma_schedule(n, setup.sampler.shift)]
  batch = make_batch_fn(setup.data, ctx.mesh)(0)
  noise = jax.jit(lambda k: jax.random.normal(k, batch["latents"].shape),
                  out_shardings=batch_sharding(ctx.mesh, 5, setup.data.batch))
  key = jax.random.key(setup.seed + 2)
  x0 = noise(key)
  compiled, compile_s = compile_step(
      program.denoise_step, (params, x0, batch["text"], jnp.float32(1.0), jnp.float32(0.5)),
      "denoise_step", ctx.window)

  def step_fn(x, step):
    i = step % n
    if i == 0 and step > 0:
      x = noise(jax.random.fold_in(key, step))
    return compiled(params, x, batch["text"], jnp.float32(sigmas[i]), jnp.float32(sigmas[i + 1]))

  timer = _Timer(ctx, 0, min(ctx.run.warmup_steps, num_steps - 1), "eval")
  _, last, stopped = run_loop(step_fn, x0, 0, num_steps, on_step=timer, ctx=ctx, desc=desc)
  return PhaseResult(timer.times, compile_s, timer.last, last + 1, stopped)
