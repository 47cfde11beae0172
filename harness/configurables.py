"""The gin configurables users bind: each returns a frozen config; nothing else reads gin.

Every binding a user types (`run.steps`, `attention.num_chunks`, `mesh.context`, ...) is a
parameter of one function below or of a frozen dataclass registered here.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any

import gin

from harness.mesh_axes import AXES
from harness.model.config import DiTConfig, VideoConfig
from harness.suggest import did_you_mean

MODES = ("train", "eval", "aot")
# Without jax_enable_x64 JAX keeps a seed's low 32 bits (key(-1) == key(2**32 - 1)) and refuses
# seeds beyond int64: one signed 32-bit range keeps every seed distinct and valid.
SEED_RANGE = (-2**31, 2**31 - 1)


_SIMPLE = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _check_types(cls: type, name: str, kwargs: dict[str, Any]) -> None:
  """A quoted number (`run.steps='12'`) or a number for a name fails with one line, not later."""
  for field in dataclasses.fields(cls):
    if field.name not in kwargs:
      continue
    value = kwargs[field.name]
    options = [t.strip() for t in str(field.type).split("|")]
    if "None" in options and value is None:
      continue
    types = [o for o in options if o != "None"]
    if not types or any(t not in _SIMPLE for t in types):
      continue  # a type this check does not model (tuples, ...): the dataclass checks it
    allowed = tuple(t for o in types for t in _SIMPLE[o])
    if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
      raise ValueError(f"{name}.{field.name}={value!r}: expected {' or '.join(options)}")


def _register(cls: type, name: str):
  """Makes `name.field = value` bind the dataclass's fields, checked against its signature."""

  def make(**kwargs: Any):
    _check_types(cls, name, kwargs)
    return cls(**kwargs)

  make.__signature__ = inspect.signature(cls)
  make.__name__ = name
  make.__doc__ = cls.__doc__
  return gin.configurable(name)(make)


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
      raise ValueError(f"run.mode={self.mode!r}: choose one of {', '.join(MODES)}"
                       f"{did_you_mean(self.mode, MODES)}")
    if self.steps <= 0:
      raise ValueError(f"run.steps={self.steps}: must be > 0")
    if self.warmup_steps < 0 or self.warmup_steps >= self.steps:
      raise ValueError(
          f"run.warmup_steps={self.warmup_steps}: must be >= 0 and < run.steps={self.steps}")
    if self.batch_size <= 0:
      raise ValueError(f"run.batch_size={self.batch_size}: must be > 0")
    if self.checkpoint_every < 0:
      raise ValueError(f"run.checkpoint_every={self.checkpoint_every}: must be >= 0 (0 = never)")
    _check_run_name(self.run_name)
    if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
      raise ValueError(f"run.seed={self.seed}: must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}] "
                       "(JAX uses a seed's low 32 bits only: others would repeat these)")


def _check_run_name(name: str) -> None:
  """A run name is one plain folder under run.output_dir: '..' or 'a/b' would write elsewhere."""
  bad = (not name or name in (".", "..") or name.startswith("-")
         or any(sep in name for sep in ("/", "\\", os.sep))
         or any(ord(c) < 32 or ord(c) == 127 for c in name))
  if bad:
    raise ValueError(f"run.run_name={name!r}: must be a plain folder name (not '.' or '..', no "
                     "'/' or '\\', no leading '-', no control characters)")


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
        raise ValueError(f"mesh.{axis}={size}: axis sizes must be positive or -1 (the rest)")
    for name in ("simulated_devices", "num_processes"):
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise ValueError(f"mesh.{name}={value}: must be > 0")
    for name in ("heartbeat_timeout_s", "init_timeout_s"):
      if getattr(self, name) <= 0:
        raise ValueError(f"mesh.{name}={getattr(self, name)}: must be > 0 (seconds)")


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


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Euler flow-matching sampler with classifier-free guidance (eval mode)."""
  denoising_steps: int = 4
  guidance_scale: float = 5.0
  shift: float = 5.0

  def __post_init__(self):
    if self.denoising_steps <= 0:
      raise ValueError(f"sampler.denoising_steps={self.denoising_steps}: must be > 0")


@dataclasses.dataclass(frozen=True)
class ProfilerConfig:
  """Profiler trace window (steps counted from 0, warm-up included)."""
  enabled: bool = False
  start_step: int = 3
  num_steps: int = 2
  all_hosts: bool = False

  def __post_init__(self):
    if self.enabled and self.num_steps < 1:
      raise ValueError(f"profiler.num_steps={self.num_steps}: must be >= 1 when profiler.enabled")
    if self.enabled and self.start_step < 0:
      raise ValueError(f"profiler.start_step={self.start_step}: must be >= 0")


run = _register(RunConfig, "run")
mesh = _register(MeshConfig, "mesh")
attention = _register(AttentionConfig, "attention")
model = _register(DiTConfig, "model")
video = _register(VideoConfig, "video")
optimizer = _register(OptimizerConfig, "optimizer")
sampler = _register(SamplerConfig, "sampler")
profiler = _register(ProfilerConfig, "profiler")

# By the name users type: for 'did you mean' on a misspelt configurable or parameter.
CONFIGURABLES = {"run": run, "mesh": mesh, "attention": attention, "model": model, "video": video,
                 "optimizer": optimizer, "sampler": sampler, "profiler": profiler}
