"""Eval mode: timed Euler denoising with classifier-free guidance."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from harness import diffusion, loop
from harness.data import make_batch_fn
from harness.sharding import batch_sharding
from harness.train import PhaseResult


def denoise(ctx, program, setup, params, num_steps: int, first_step: int = 0,
            desc: str = "eval") -> PhaseResult:
  """Runs `num_steps` denoising steps (restarting from noise every sampler.denoising_steps)."""
  n = setup.sampler.denoising_steps
  sigmas = [float(s) for s in diffusion.sigma_schedule(n, setup.sampler.shift)]
  batch = make_batch_fn(setup.data, ctx.mesh)(0)
  x_sh = batch_sharding(ctx.mesh, 5, setup.data.batch)
  noise = jax.jit(lambda k: jax.random.normal(k, batch["latents"].shape), out_shardings=x_sh)
  key = jax.random.key(setup.seed + 2)
  x0 = noise(key)
  t0 = time.perf_counter()
  compiled = program.denoise_step.lower(params, x0, batch["text"], jnp.float32(1.0),
                                        jnp.float32(0.5)).compile()
  compile_s = time.perf_counter() - t0
  ctx.window.add_hlo_text("denoise_step", compiled.as_text())
  times: list[float] = []
  last: dict[str, float] = {}

  def step_fn(x, step):
    i = step % n
    if i == 0 and step > first_step:
      x = noise(jax.random.fold_in(key, step))
    return compiled(params, x, batch["text"], jnp.float32(sigmas[i]), jnp.float32(sigmas[i + 1]))

  def on_step(step, metrics, dt):
    if ctx.run.nan_check:
      loop.check_finite(step, metrics, "eval")
    last.update(metrics)
    timed = step - first_step >= min(ctx.run.warmup_steps, num_steps - 1) and not (
        ctx.window.in_window(step))
    if timed:
      times.append(dt)
    ctx.log_step(step, dt, metrics, timed)

  bar = loop.progress_bar(num_steps, 0, desc, ctx.run.progress)
  try:
    with loop.StopRequested() as stop:
      result = loop.run_loop(step_fn, x0, first_step, first_step + num_steps, on_step=on_step,
                             window=ctx.window, stop=stop, sync_after=lambda _: False,
                             on_synced=lambda *_: None, bar=bar)
  finally:
    if bar is not None:
      bar.close()
  return PhaseResult(times, compile_s, last, result.last_step + 1 - first_step,
                     result.stopped_early)
