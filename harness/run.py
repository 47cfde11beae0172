"""The run entry: gin → configs → devices → mesh → run folder → the chosen mode → outputs."""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import pathlib
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AbstractMesh

from harness import configurables as C
from harness import config as config_lib
from harness import identity as identity_lib
from harness import mesh as mesh_lib
from harness import execute, run_folder, summary
from harness.mesh_axes import AXES
from harness.phases import StopRequested
from harness.steps import Setup

log = logging.getLogger(__name__)

ACTIONS = ("fresh", "continue", "complete")


@dataclasses.dataclass(frozen=True)
class Configs:
  """Every configurable section, read once at the edge."""
  run: C.RunConfig
  mesh: C.MeshConfig
  attention: C.AttentionConfig
  model: C.DiTConfig
  video: C.VideoConfig
  optimizer: C.OptimizerConfig
  sampler: C.SamplerConfig
  profiler: C.ProfilerConfig

  @property
  def setup(self) -> Setup:
    return Setup(self.model, self.video, self.attention, self.optimizer, self.sampler,
                 self.run.batch_size, self.run.seed, self.run.steps)

  @property
  def run_dir(self) -> pathlib.Path:
    return pathlib.Path(self.run.output_dir) / self.run.run_name


def load_configs() -> Configs:
  """Calls each configurable so gin fills it (and records it in the operative config)."""
  return Configs(C.run(), C.mesh(), C.attention(), C.model(), C.video(), C.optimizer(),
                 C.sampler(), C.profiler())


def _aot_config():
  from harness.aot.config import aot_config  # pylint: disable=g-import-not-at-top  # libtpu
  return aot_config()


def identity(cfgs: Configs) -> dict:
  """The run's identity: every section but the knobs that may change between segments."""
  sections = {f.name: getattr(cfgs, f.name) for f in dataclasses.fields(cfgs)}
  sections["aot"] = _aot_config()
  return identity_lib.identity(sections, cfgs.run.mode)


def apply_libtpu_flags(flags) -> None:
  """The hardware gin's LIBTPU flags reach a real TPU run through LIBTPU_INIT_ARGS (set first)."""
  from harness.aot.flags import libtpu_init_args  # pylint: disable=g-import-not-at-top
  existing = os.environ.get("LIBTPU_INIT_ARGS", "")
  extra = [f for f in libtpu_init_args(flags).split() if f.split("=")[0] not in existing]
  if extra:
    os.environ["LIBTPU_INIT_ARGS"] = " ".join([existing, *extra]).strip()


def prepare_devices(cfg: C.MeshConfig) -> None:
  """Simulated CPU devices, LIBTPU flags and multi-process set-up, before the backend starts."""
  if cfg.simulated_devices is not None:
    mesh_lib.use_simulated_devices(cfg.simulated_devices)
  else:
    apply_libtpu_flags(_aot_config().libtpu_flags)
  mesh_lib.init_distributed(cfg.coordinator_address, cfg.num_processes, cfg.process_id,
                            cfg.heartbeat_timeout_s, cfg.init_timeout_s)


def build_mesh(cfg: C.MeshConfig, devices=None):
  return mesh_lib.make_mesh(cfg.data, cfg.fsdp, cfg.context, cfg.tensor, devices=devices)


def abstract_mesh(cfg: C.MeshConfig) -> AbstractMesh:
  """The mesh a run would use, without starting a backend when the sizes are all explicit."""
  sizes = {a: getattr(cfg, a) for a in AXES}
  if cfg.simulated_devices is not None:
    count = cfg.simulated_devices
  elif -1 not in sizes.values():
    count = math.prod(sizes.values())
  else:
    count = jax.device_count()
  sizes = mesh_lib.resolve_axis_sizes(sizes, count)
  return AbstractMesh(tuple(sizes.values()), AXES)


def _platform(mesh) -> str | None:
  """The platform a mesh's devices compile for (a TPU topology's on a CPU host); None if abstract."""
  if isinstance(mesh, AbstractMesh):
    return None
  return mesh.devices.flat[0].platform


def validate(cfgs: Configs, mesh, step: str | None = None) -> None:
  """Fails fast, before tracing, on shapes the attention or the mesh cannot take.

  `step` ('train' | 'eval', default run.mode) decides the batch rule: eval runs the CFG pair, a
  batch of 2 * run.batch_size, so batch 1 on mesh.data=2 is how published setups run it.
  """
  from harness.attention import validate as validate_attention
  attn = cfgs.attention
  validate_attention(heads=cfgs.model.num_heads, kv_heads=cfgs.model.num_heads,
                     context=mesh.shape["context"], variant=attn.variant,
                     num_chunks=attn.num_chunks, ulysses_degree=attn.ulysses_degree,
                     kernel=attn.kernel, packed_qkv=attn.packed_qkv, pad_heads=attn.pad_heads,
                     platform=_platform(mesh), chunk_sizing=attn.chunk_sizing)
  cfgs.model.grid(cfgs.video)
  batch_par = mesh.shape["data"] * mesh.shape["fsdp"]
  step = step or cfgs.run.mode
  if step == "eval" and (2 * cfgs.run.batch_size) % batch_par:
    raise ValueError(f"run.batch_size={cfgs.run.batch_size} gives an eval batch of "
                     f"{2 * cfgs.run.batch_size} (the CFG pair), not divisible by "
                     f"mesh.data*mesh.fsdp={batch_par}")
  if step != "eval" and cfgs.run.batch_size % batch_par:
    raise ValueError(f"run.batch_size={cfgs.run.batch_size} is not divisible by "
                     f"mesh.data*mesh.fsdp={batch_par}")
  _validate_profiler(cfgs)


def _validate_profiler(cfgs: Configs) -> None:
  """A window past the last step captures nothing (refused); one over every timed step warns."""
  p, r = cfgs.profiler, cfgs.run
  if not p.enabled or r.mode == "aot":
    return
  if p.start_step >= r.steps:
    raise ValueError(f"profiler.start_step={p.start_step}: the window starts after the last "
                     f"step; choose a start in [0, run.steps={r.steps}) or "
                     f"profiler.enabled=False")
  window = set(range(p.start_step, p.start_step + p.num_steps))
  if not any(s not in window for s in range(r.warmup_steps, r.steps)):
    # A profile-only run is legitimate; its summary just has no step time (null, never NaN).
    log.warning("profiler.start_step=%d, profiler.num_steps=%d cover every timed step "
                "(run.warmup_steps=%d, run.steps=%d): this run records a trace but no step time",
                p.start_step, p.num_steps, r.warmup_steps, r.steps)


def _target(cfgs: Configs) -> dict:
  """What 'complete' means for this invocation (see run_folder)."""
  if cfgs.run.mode == "aot":
    return {}
  target = {"steps": cfgs.run.steps}
  if cfgs.run.mode == "train" and cfgs.run.final_eval:
    target["final_eval"] = 1
  return target


def _placement(cfgs: Configs, mesh) -> dict:
  if cfgs.run.mode == "aot":
    return {"topology": _aot_config().topology}
  return {"platform": _platform(mesh), "devices": int(mesh.size),
          "mesh": {k: int(v) for k, v in mesh.shape.items()}}


def claim_folder(cfgs: Configs, mesh, ident: dict, argv: list[str]):
  """(claim, lock) on process 0; the same decision on every other process (lock None)."""
  # AOT compiles on this host alone; asking JAX for processes would start a backend too early.
  processes = 1 if cfgs.run.mode == "aot" else jax.process_count()
  is_main = processes == 1 or jax.process_index() == 0
  code, claim, handle = -1, None, None
  if is_main:
    try:
      handle = run_folder.lock(cfgs.run_dir)
      claim = run_folder.claim(cfgs.run_dir, ident, cfgs.run.mode, _placement(cfgs, mesh),
                               _target(cfgs), cfgs.run.resume)
      if "moved_aside" in claim.record and claim.run_dir == cfgs.run_dir:
        handle.close()  # the lock moved aside with the old folder: take the new one's
        handle = run_folder.lock(cfgs.run_dir)
      code = ACTIONS.index(claim.action) * 2 + (claim.run_dir != cfgs.run_dir)
    finally:
      if processes > 1:
        code = int(multihost_utils.broadcast_one_to_all(np.int32(code)))
  else:
    code = int(multihost_utils.broadcast_one_to_all(np.int32(code)))
  if claim is None:
    if code < 0:
      raise run_folder.RunFolderError(f"{cfgs.run_dir}: process 0 refused the run folder")
    beside = code % 2 == 1
    claim = run_folder.Claim(cfgs.run_dir / cfgs.run.mode if beside else cfgs.run_dir,
                             ACTIONS[code // 2], {"attempts": []},
                             cfgs.run_dir if beside and cfgs.run.mode == "eval" else None)
  if claim.action != "complete" and is_main:
    run_folder.start_attempt(claim, argv)
  return claim, handle


def _already_complete(claim, lock_handle) -> dict | None:
  if lock_handle is not None:
    lock_handle.close()
  progress = claim.record.get("progress", {})
  done = f"{progress['steps']} steps" if "steps" in progress else "its compile"
  print(f"run {claim.run_dir} is already complete ({done}, status ok); nothing changed. Set a "
        f"larger run.steps to continue it, or run.resume=False to move it aside and start afresh")
  path = claim.run_dir / ("aot.json" if claim.record.get("mode") == "aot" else "summary.json")
  return summary.read_json(path)


def main(gin_files, bindings, search_paths=(), dry_run: bool = False) -> dict | None:
  """Parses gin and runs; returns the summary (None for --dry_run)."""
  files = config_lib.parse(gin_files, bindings, search_paths)
  cfgs = load_configs()
  ident = identity(cfgs)
  argv = list(sys.argv)
  if cfgs.run.mode == "aot":
    from harness.aot import entry  # pylint: disable=g-import-not-at-top  # needs libtpu
    mesh = entry.topology_mesh(cfgs, build_mesh)  # a bad config fails before any file is written
    claim, handle = claim_folder(cfgs, None, ident, argv)
    if claim.action == "complete":
      return _already_complete(claim, handle)
    extra = {"fingerprint": claim.record.get("fingerprint"), "attempt": claim.attempt}
    return execute.attempt(claim, lambda: entry.run_aot_mode(
        cfgs, build_mesh, out_dir=claim.run_dir, extra=extra, mesh=mesh), handle)
  if dry_run:
    mesh = abstract_mesh(cfgs.mesh)
    validate(cfgs, mesh)
    print(summary.dry_run_report(cfgs, mesh, files))
    return None
  with StopRequested() as stop:  # SIGTERM from here on is recorded, never a silent exit 143
    prepare_devices(cfgs.mesh)
    mesh = build_mesh(cfgs.mesh)
    validate(cfgs, mesh)
    claim, handle = claim_folder(cfgs, mesh, ident, argv)
    if claim.action == "complete":
      return _already_complete(claim, handle)
    return execute.attempt(claim, lambda: execute.execute(cfgs, mesh, claim, stop), handle)
