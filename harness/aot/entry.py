"""`run.mode='aot'`: compile the configured train or eval step for `aot.topology` and report."""
from __future__ import annotations

import os
from typing import Any, Callable

import gin
import jax

from harness.aot.config import AotConfig, aot_config
from harness.aot.run import run_aot
from harness.aot.topology import get_topology


def _prefer_cpu_backend() -> None:
  """AOT needs no accelerator: keep JAX from probing for a local TPU (slow, noisy) when it can."""
  if "JAX_PLATFORMS" not in os.environ:
    try:
      jax.config.update("jax_platforms", "cpu")
    except Exception:  # pylint: disable=broad-except
      pass  # a backend already started; compiling for the topology works either way


def step_and_args(cfgs: Any, mesh, step: str) -> tuple[Callable, tuple]:
  """The jitted train step or one eval (denoising) step and their abstract arguments."""
  from harness import steps  # pylint: disable=g-import-not-at-top
  setup = cfgs.setup
  program = steps.build_program(setup, mesh)
  if step == "train":
    return program.train_step, steps.abstract_train_args(program, setup, mesh)
  return program.denoise_step, steps.abstract_denoise_args(program, setup, mesh)


def topology_mesh(cfgs: Any, build_mesh: Callable, aot: AotConfig | None = None):
  """The mesh on `aot.topology`'s devices, validated against the config (nothing written)."""
  _prefer_cpu_backend()
  aot = aot or aot_config()
  mesh = build_mesh(cfgs.mesh, devices=get_topology(aot.topology).devices)
  from harness import run as run_lib  # pylint: disable=g-import-not-at-top
  run_lib.validate(cfgs, mesh, step=aot.step)
  return mesh


def run_aot_mode(cfgs: Any, build_mesh: Callable, aot: AotConfig | None = None,
                 out_dir: str | os.PathLike | None = None, extra: dict | None = None,
                 mesh=None) -> dict:
  """Builds the mesh on the topology's devices, compiles the step, writes aot.json; returns it."""
  aot = aot or aot_config()
  mesh = mesh if mesh is not None else topology_mesh(cfgs, build_mesh, aot)
  topology = get_topology(aot.topology)
  fn, args = step_and_args(cfgs, mesh, aot.step)
  out_dir = str(out_dir or cfgs.run_dir)
  os.makedirs(out_dir, exist_ok=True)
  report = run_aot(fn, args, topology=topology, flags=aot.libtpu_flags, out_dir=out_dir,
                   step_kind=aot.step, print_table=False)
  report["attention"] = {"variant": cfgs.attention.variant,
                         "num_chunks": cfgs.attention.num_chunks, "kernel": cfgs.attention.kernel,
                         "pipelined_projections": cfgs.attention.pipelined_projections}
  report["mesh"] = {k: int(v) for k, v in mesh.shape.items()}
  report.update(extra or {})
  from harness.aot import report as report_lib  # pylint: disable=g-import-not-at-top
  report_lib.write_report(report, out_dir)
  with open(os.path.join(out_dir, "config.gin"), "w") as f:
    f.write(gin.operative_config_str())
  print(report_lib.format_table(report), flush=True)
  return report
