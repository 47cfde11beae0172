"""The run entry: gin configs → devices → mesh → program → the chosen mode → outputs."""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib

import jax
from jax.sharding import AbstractMesh

from harness import configurables as C
from harness import config as config_lib
from harness import mesh as mesh_lib
from harness import execute, summary
from harness.mesh_axes import AXES
from harness.steps import Setup


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


def apply_libtpu_flags(flags) -> None:
  """The hardware gin's LIBTPU flags reach a real TPU run through LIBTPU_INIT_ARGS (set first)."""
  from harness.aot.flags import libtpu_init_args
  existing = os.environ.get("LIBTPU_INIT_ARGS", "")
  extra = [f for f in libtpu_init_args(flags).split() if f.split("=")[0] not in existing]
  if extra:
    os.environ["LIBTPU_INIT_ARGS"] = " ".join([existing, *extra]).strip()


def prepare_devices(cfg: C.MeshConfig) -> None:
  """Simulated CPU devices, LIBTPU flags and multi-process set-up, before the backend starts."""
  if cfg.simulated_devices is not None:
    mesh_lib.use_simulated_devices(cfg.simulated_devices)
  else:
    from harness.aot.config import aot_config
    apply_libtpu_flags(aot_config().libtpu_flags)
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


def validate(cfgs: Configs, mesh) -> None:
  """Fails fast, before tracing, on shapes the attention or the mesh cannot take."""
  from harness.attention import validate as validate_attention
  attn = cfgs.attention
  validate_attention(heads=cfgs.model.num_heads, kv_heads=cfgs.model.num_heads,
                     context=mesh.shape["context"], variant=attn.variant,
                     num_chunks=attn.num_chunks, ulysses_degree=attn.ulysses_degree,
                     kernel=attn.kernel, packed_qkv=attn.packed_qkv, pad_heads=attn.pad_heads,
                     platform=_platform(mesh), chunk_sizing=attn.chunk_sizing)
  cfgs.model.grid(cfgs.video)
  batch_par = mesh.shape["data"] * mesh.shape["fsdp"]
  if cfgs.run.batch_size % batch_par:
    raise ValueError(f"run.batch_size={cfgs.run.batch_size} is not divisible by "
                     f"mesh.data*mesh.fsdp={batch_par}")


def main(gin_files, bindings, search_paths=(), dry_run: bool = False) -> dict | None:
  """Parses gin and runs; returns the summary (None for --dry_run)."""
  files = config_lib.parse(gin_files, bindings, search_paths)
  cfgs = load_configs()
  if cfgs.run.mode == "aot":
    from harness.aot.entry import run_aot_mode
    return run_aot_mode(cfgs, build_mesh)
  if dry_run:
    mesh = abstract_mesh(cfgs.mesh)
    validate(cfgs, mesh)
    print(summary.dry_run_report(cfgs, mesh, files))
    return None
  prepare_devices(cfgs.mesh)
  mesh = build_mesh(cfgs.mesh)
  validate(cfgs, mesh)
  return execute.execute(cfgs, mesh)
