"""Typed config sections, one per gin name users bind (`run.*`, `mesh.*`, ...); no gin here.

Each section checks its values with one-line errors naming the binding and, where sensible,
builds what it describes (`MeshConfig.build`: a Mesh; `HardwareConfig.apply`: the LIBTPU flags of
a real run; `OptimizerConfig.build`: the optimizer; `ProfilerConfig.window`: the capture window).
`Configs` bundles them; harness.gin_config fills them from gin.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Sequence

import jax
import optax
from jax.sharding import AbstractMesh, Mesh

from harness import mesh as mesh_lib
from harness.aot import flags as flags_lib
from harness.aot import topology as topology_lib
from harness.data import DataSpec
from harness.errors import UserError
from harness.mesh import AXES
from harness.model.config import DiTConfig, VideoConfig
from harness.profiling import ProfilerWindow
from harness.suggest import did_you_mean

MODES = ("train", "eval", "aot")
AOT_STEPS = ("train", "eval")
# Without jax_enable_x64 JAX keeps a seed's low 32 bits (key(-1) == key(2**32 - 1)) and refuses
# seeds beyond int64: one signed 32-bit range keeps every seed distinct and valid.
SEED_RANGE = (-2**31, 2**31 - 1)

__all__ = ["AotConfig", "AttentionConfig", "Configs", "DiTConfig", "HardwareConfig", "MeshConfig",
           "OptimizerConfig", "ProfilerConfig", "RunConfig", "SamplerConfig", "Setup", "UserError",
           "VideoConfig"]


def _check_run_name(name: str) -> None:
  """A run name is one plain folder under run.output_dir: '..' or 'a/b' would write elsewhere."""
  bad = (not name or name in (".", "..") or name.startswith("-")
         or any(sep in name for sep in ("/", "\\", os.sep))
         or any(ord(c) < 32 or ord(c) == 127 for c in name))
  if bad:
    raise UserError(f"run.run_name={name!r}: must be a plain folder name (not '.' or '..', no "
                    "'/' or '\\', no leading '-', no control characters)")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """What to run and where outputs go."""
  mode: str = "train"
  steps: int = 20
  output_dir: str = "out"
  run_name: str = "run"
  seed: int = 0
  batch_size: int = 1
  warmup_steps: int = 2
  checkpoint_every: int = 0
  resume: bool = True
  nan_check: bool = True
  final_eval: bool = False
  progress: bool = True
  poison_step: int = -1  # for tests: feed NaN inputs at this train step to exercise nan_check

  def __post_init__(self):
    if self.mode not in MODES:
      raise UserError(f"run.mode={self.mode!r}: choose one of {', '.join(MODES)}"
                      f"{did_you_mean(self.mode, MODES)}")
    if self.steps <= 0:
      raise UserError(f"run.steps={self.steps}: must be > 0")
    if self.warmup_steps < 0 or self.warmup_steps >= self.steps:
      raise UserError(
          f"run.warmup_steps={self.warmup_steps}: must be >= 0 and < run.steps={self.steps}")
    if self.batch_size <= 0:
      raise UserError(f"run.batch_size={self.batch_size}: must be > 0")
    if self.checkpoint_every < 0:
      raise UserError(f"run.checkpoint_every={self.checkpoint_every}: must be >= 0 (0 = never)")
    _check_run_name(self.run_name)
    if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
      raise UserError(f"run.seed={self.seed}: must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}] "
                      "(JAX uses a seed's low 32 bits only: others would repeat these)")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh sizes (-1 = the rest), simulated CPU devices, and multi-host set-up."""
  data: int = 1
  fsdp: int = 1
  context: int = -1
  tensor: int = 1
  simulated_devices: int | None = None
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  heartbeat_timeout_s: int = 100
  init_timeout_s: int = 300

  def __post_init__(self):
    for axis in AXES:
      size = getattr(self, axis)
      if size == 0 or size < -1:
        raise UserError(f"mesh.{axis}={size}: axis sizes must be positive or -1 (the rest)")
    for name in ("simulated_devices", "num_processes"):
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise UserError(f"mesh.{name}={value}: must be > 0")
    for name in ("heartbeat_timeout_s", "init_timeout_s"):
      if getattr(self, name) <= 0:
        raise UserError(f"mesh.{name}={getattr(self, name)}: must be > 0 (seconds)")

  @property
  def sizes(self) -> dict[str, int]:
    return {a: getattr(self, a) for a in AXES}

  def build(self, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The mesh over `devices` (default: every device of the started backend)."""
    return mesh_lib.make_mesh(self.data, self.fsdp, self.context, self.tensor, devices=devices)

  def abstract(self) -> AbstractMesh:
    """The mesh a run would use, without starting a backend when the sizes are all explicit."""
    sizes = self.sizes
    if self.simulated_devices is not None:
      count = self.simulated_devices
    elif -1 not in sizes.values():
      count = math.prod(sizes.values())
    else:
      count = jax.device_count()
    sizes = mesh_lib.resolve_axis_sizes(sizes, count)
    return AbstractMesh(tuple(sizes.values()), AXES)

  def prepare(self) -> None:
    """Simulated CPU devices and multi-process set-up: before the JAX backend starts."""
    if self.simulated_devices is not None:
      mesh_lib.use_simulated_devices(self.simulated_devices)
    mesh_lib.init_distributed(self.coordinator_address, self.num_processes, self.process_id,
                              self.heartbeat_timeout_s, self.init_timeout_s)


@dataclasses.dataclass(frozen=True)
class HardwareConfig:
  """The accelerator's settings for real runs: LIBTPU flags ('--xla_name=value' strings)."""
  libtpu_flags: tuple[str, ...] = ()

  def __post_init__(self):
    flags = flags_lib.flag_list(self.libtpu_flags, binding="hardware.libtpu_flags")
    object.__setattr__(self, "libtpu_flags", tuple(flags))

  def init_args(self) -> str:
    """The flags as LIBTPU_INIT_ARGS ('' when none): what a real run sets, and what the XPK
    launcher passes to the container."""
    return flags_lib.libtpu_init_args(self.libtpu_flags)

  def apply(self) -> None:
    """Adds the flags to LIBTPU_INIT_ARGS (libtpu reads it once, at start-up); the user's win."""
    existing = os.environ.get("LIBTPU_INIT_ARGS", "")
    extra = [f for f in self.init_args().split()
             if f.split("=")[0] not in existing]
    if extra:
      os.environ["LIBTPU_INIT_ARGS"] = " ".join([existing, *extra]).strip()


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
  """Which context-parallel attention runs, and how."""
  variant: str = "ulysses"
  num_chunks: int = 1
  # Where the remainder heads go when num_chunks does not divide the head units (heads.py).
  chunk_sizing: str = "larger_first"
  kernel: str = "xla"
  ulysses_degree: int | None = None
  packed_qkv: bool = False
  pad_heads: bool = False
  # Self-attention projects q/k/v and o per head group inside the Ulysses shard_map (experimental).
  pipelined_projections: bool = False
  block_q: int = 512
  block_kv: int = 512


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with linear warm-up."""
  learning_rate: float = 1e-4
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  warmup_steps: int = 0
  grad_clip: float = 1.0

  def build(self) -> optax.GradientTransformation:
    """Clipped AdamW; a constant rate after warm-up keeps short benchmark runs comparable."""
    lr = (optax.linear_schedule(0.0, self.learning_rate, self.warmup_steps)
          if self.warmup_steps else self.learning_rate)
    return optax.chain(optax.clip_by_global_norm(self.grad_clip),
                       optax.adamw(lr, b1=self.b1, b2=self.b2, weight_decay=self.weight_decay))


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Euler flow-matching sampler with classifier-free guidance (eval mode)."""
  denoising_steps: int = 4
  guidance_scale: float = 5.0
  shift: float = 5.0

  def __post_init__(self):
    if self.denoising_steps <= 0:
      raise UserError(f"sampler.denoising_steps={self.denoising_steps}: must be > 0")


@dataclasses.dataclass(frozen=True)
class ProfilerConfig:
  """Profiler trace window (steps counted from 0, warm-up included)."""
  enabled: bool = False
  start_step: int = 3
  num_steps: int = 2
  all_hosts: bool = False

  def __post_init__(self):
    if self.enabled and self.num_steps < 1:
      raise UserError(f"profiler.num_steps={self.num_steps}: must be >= 1 when profiler.enabled")
    if self.enabled and self.start_step < 0:
      raise UserError(f"profiler.start_step={self.start_step}: must be >= 0")

  def window(self, log_dir: str, process_index: int) -> ProfilerWindow:
    """The capture window of this run's process `process_index`, writing under `log_dir`."""
    return ProfilerWindow(log_dir, enabled=self.enabled, start_step=self.start_step,
                          num_steps=self.num_steps, all_hosts=self.all_hosts,
                          process_index=process_index)


@dataclasses.dataclass(frozen=True)
class AotConfig:
  """What an AOT compile targets; `libtpu_flags` None compiles with hardware.libtpu_flags."""
  topology: str = "v5p:2x2x2"
  step: str = "train"
  libtpu_flags: tuple[str, ...] | None = None

  def __post_init__(self):
    topology_lib.parse_topology_name(self.topology)  # names only: libtpu loads at compile time
    if self.step not in AOT_STEPS:
      raise UserError(f"aot.step={self.step!r} is invalid; valid choices: "
                      f"{', '.join(map(repr, AOT_STEPS))}{did_you_mean(self.step, AOT_STEPS)}")
    if self.libtpu_flags is not None:
      flags = flags_lib.flag_list(self.libtpu_flags, binding="aot.libtpu_flags")
      object.__setattr__(self, "libtpu_flags", tuple(flags))

  def flags(self, hardware: HardwareConfig) -> tuple[str, ...]:
    """The LIBTPU flags this compile uses: its own, else the hardware's."""
    return hardware.libtpu_flags if self.libtpu_flags is None else self.libtpu_flags


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything the step functions depend on, as plain frozen configs."""
  model: DiTConfig
  video: VideoConfig
  attention: AttentionConfig
  optimizer: OptimizerConfig
  sampler: SamplerConfig
  batch_size: int
  seed: int
  total_steps: int

  @property
  def data(self) -> DataSpec:
    return DataSpec(self.batch_size, self.video.latent_shape(self.model.in_channels),
                    self.model.text_len, self.model.text_dim, self.seed)


@dataclasses.dataclass(frozen=True)
class Configs:
  """Every section of a run, read once from gin (harness.gin_config.read_configs)."""
  run: RunConfig
  mesh: MeshConfig
  hardware: HardwareConfig
  attention: AttentionConfig
  model: DiTConfig
  video: VideoConfig
  optimizer: OptimizerConfig
  sampler: SamplerConfig
  profiler: ProfilerConfig
  aot: AotConfig

  @property
  def setup(self) -> Setup:
    return Setup(self.model, self.video, self.attention, self.optimizer, self.sampler,
                 self.run.batch_size, self.run.seed, self.run.steps)

  @property
  def run_dir(self) -> pathlib.Path:
    return pathlib.Path(self.run.output_dir) / self.run.run_name
