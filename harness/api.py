"""One programmatic entry: gin files + bindings -> configs, mesh, program.

  loaded = api.load(["quickstart.gin"], ["attention.num_chunks=2"])
  loaded.program.train_step(...)               # on this machine's devices
  loaded = api.load(files, bindings, abstract=True)
  fn, args = loaded.abstract_step()             # for aot.topology, compiled without a TPU

The runner (`python -m harness`), the AOT entry, the benchmarks, the studies and the tests all
start here, so each reaches a step through the same checks.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Callable, Sequence

import jax
from jax.sharding import AbstractMesh, Mesh

from harness import gin_config, steps
from harness.aot.topology import Topology, get_topology
from harness.attention.types import AttentionPlan
from harness.configs import Configs
from harness.errors import UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A run's configs and mesh; its program (jitted, not compiled) is built on first use."""
  configs: Configs
  mesh: Mesh | AbstractMesh
  files: tuple[str, ...] = ()
  topology: Topology | None = None  # set when the mesh lies on an AOT topology's devices
  attention_plan: AttentionPlan | None = None  # checked by `validate`, reused by the program

  @functools.cached_property
  def program(self) -> steps.Program:
    return steps.build_program(self.configs.setup, self.mesh, self.attention_plan)

  def abstract_step(self, step: str | None = None) -> tuple[Callable, tuple]:
    """The jitted train step or one eval (denoising) step and its abstract arguments."""
    setup, step = self.configs.setup, step or self.configs.aot.step
    if step == "train":
      return self.program.train_step, steps.abstract_train_args(self.program, setup, self.mesh)
    return self.program.denoise_step, steps.abstract_denoise_args(self.program, setup, self.mesh)


def read(gin_files: Sequence[str], bindings: Sequence[str],
         search_paths: Sequence[str] = ()) -> tuple[Configs, tuple[str, ...]]:
  """(configs, resolved gin files): parses gin and reads every section once."""
  files = gin_config.parse(gin_files, bindings, search_paths)
  return gin_config.read_configs(), tuple(files)


def load(gin_files: Sequence[str], bindings: Sequence[str], *, abstract: bool = False,
         search_paths: Sequence[str] = ()) -> Loaded:
  """Parses gin and places the run: on this machine's devices, or (abstract) on aot.topology's."""
  configs, files = read(gin_files, bindings, search_paths)
  return place(configs, files, abstract=abstract)


def place(configs: Configs, files: Sequence[str] = (), *, abstract: bool = False) -> Loaded:
  """Builds and validates the mesh; abstract=True uses aot.topology's devices (no TPU needed)."""
  if abstract:
    _prefer_cpu_backend()
    topology = get_topology(configs.aot.topology)
    mesh = configs.mesh.build(devices=topology.devices)
    plan = validate(configs, mesh, step=configs.aot.step)
    return Loaded(configs, mesh, tuple(files), topology, plan)
  prepare_devices(configs)
  mesh = configs.mesh.build()
  plan = validate(configs, mesh)
  return Loaded(configs, mesh, tuple(files), attention_plan=plan)


def prepare_devices(configs: Configs) -> None:
  """Simulated CPU devices or the hardware's LIBTPU flags, then multi-process set-up."""
  if configs.mesh.simulated_devices is None:
    configs.hardware.apply()
  configs.mesh.prepare()


def _prefer_cpu_backend() -> None:
  """AOT needs no accelerator: keep JAX from probing for a local TPU (slow, noisy) when it can."""
  if "JAX_PLATFORMS" not in os.environ:
    try:
      jax.config.update("jax_platforms", "cpu")
    except Exception:  # pylint: disable=broad-except
      pass  # a backend already started; compiling for the topology works either way


def validate(cfgs: Configs, mesh, step: str | None = None) -> AttentionPlan:
  """Fails fast, before tracing, on shapes the attention or the mesh cannot take; returns the
  self-attention plan, so that the program does not check the bindings again.

  `step` ('train' | 'eval', default run.mode) decides the batch rule: eval runs the CFG pair, a
  batch of 2 * run.batch_size, so batch 1 on mesh.data=2 is how published setups run it.
  """
  plan = steps.plan_self_attention(cfgs.attention, mesh, cfgs.model.num_heads)
  cfgs.model.grid(cfgs.video)
  batch_par = mesh.shape["data"] * mesh.shape["fsdp"]
  step = step or cfgs.run.mode
  if step == "eval" and (2 * cfgs.run.batch_size) % batch_par:
    raise UserError(f"run.batch_size={cfgs.run.batch_size} gives an eval batch of "
                    f"{2 * cfgs.run.batch_size} (the CFG pair), not divisible by "
                    f"mesh.data*mesh.fsdp={batch_par}")
  if step != "eval" and cfgs.run.batch_size % batch_par:
    raise UserError(f"run.batch_size={cfgs.run.batch_size} is not divisible by "
                    f"mesh.data*mesh.fsdp={batch_par}")
  _validate_profiler(cfgs)
  return plan


def _validate_profiler(cfgs: Configs) -> None:
  """A window past the last step captures nothing (refused); one over every timed step warns."""
  p, r = cfgs.profiler, cfgs.run
  if not p.enabled or r.mode == "aot":
    return
  if p.start_step >= r.steps:
    raise UserError(f"profiler.start_step={p.start_step}: the window starts after the last "
                    f"step; choose a start in [0, run.steps={r.steps}) or "
                    f"profiler.enabled=False")
  window = set(range(p.start_step, p.start_step + p.num_steps))
  if not any(s not in window for s in range(r.warmup_steps, r.steps)):
    # A profile-only run is legitimate; its summary just has no step time (null, never NaN).
    log.warning("profiler.start_step=%d, profiler.num_steps=%d cover every timed step "
                "(run.warmup_steps=%d, run.steps=%d): this run records a trace but no step time",
                p.start_step, p.num_steps, r.warmup_steps, r.steps)
