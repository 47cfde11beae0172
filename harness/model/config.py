"""Frozen configuration of the DiT and of the video it denoises."""
from __future__ import annotations

import dataclasses

from harness.errors import UserError
from harness.suggest import did_you_mean

# The Wan VAE compresses time by 4 (keeping the first frame) and space by 8.
VAE_TIME_STRIDE = 4
VAE_SPACE_STRIDE = 8
DTYPES = ("float32", "bfloat16")


def _check_positive_int(binding: str, value: object) -> None:
  """Sizes divide and multiply token counts: 0, negatives or non-integers fail later obscurely."""
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise UserError(f"{binding}={value!r}: must be a positive integer")


@dataclasses.dataclass(frozen=True)
class VideoConfig:
  """Pixel-space video size; latent and token shapes derive from it."""
  frames: int = 81
  height: int = 480
  width: int = 832

  def __post_init__(self):
    for name in ("frames", "height", "width"):
      _check_positive_int(f"video.{name}", getattr(self, name))

  def latent_shape(self, channels: int) -> tuple[int, int, int, int]:
    """(frames, height, width, channels) of the VAE latent."""
    if (self.frames - 1) % VAE_TIME_STRIDE:
      raise UserError(f"video.frames={self.frames}: must be 4k+1 (e.g. 5, 17, 81)")
    for name, size in (("height", self.height), ("width", self.width)):
      if size % (2 * VAE_SPACE_STRIDE):
        raise UserError(f"video.{name}={size}: must be a multiple of 16")
    return ((self.frames - 1) // VAE_TIME_STRIDE + 1, self.height // VAE_SPACE_STRIDE,
            self.width // VAE_SPACE_STRIDE, channels)


@dataclasses.dataclass(frozen=True)
class DiTConfig:
  """Architecture of a WAN-style DiT (defaults: Wan2.1 1.3B)."""
  dim: int = 1536
  num_heads: int = 12
  ffn_dim: int = 8960
  num_layers: int = 30
  in_channels: int = 16
  out_channels: int = 16
  patch: tuple[int, int, int] = (1, 2, 2)
  text_dim: int = 4096
  text_len: int = 512
  freq_dim: int = 256
  eps: float = 1e-6
  remat: bool = True
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    for name in ("dim", "num_heads", "ffn_dim", "in_channels", "out_channels", "text_dim",
                 "text_len", "freq_dim"):
      _check_positive_int(f"model.{name}", getattr(self, name))
    patch = self.patch
    if (not isinstance(patch, (tuple, list)) or len(patch) != 3
        or any(isinstance(p, bool) or not isinstance(p, int) or p <= 0 for p in patch)):
      raise UserError(f"model.patch={patch!r}: must be 3 positive integers "
                      "(frames, height, width), e.g. (1, 2, 2)")
    object.__setattr__(self, "patch", tuple(patch))  # a gin list still hashes and compares
    if self.dim % self.num_heads:
      raise UserError(f"model.dim={self.dim} is not a multiple of model.num_heads={self.num_heads}")
    if self.num_layers < 1:
      raise UserError(f"model.num_layers={self.num_layers}: must be >= 1")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise UserError(f"model.{name}={getattr(self, name)!r}: choose 'float32' or 'bfloat16'"
                        f"{did_you_mean(getattr(self, name), DTYPES)}")

  @property
  def head_dim(self) -> int:
    return self.dim // self.num_heads

  @property
  def patch_volume(self) -> int:
    return self.patch[0] * self.patch[1] * self.patch[2]

  def grid(self, video: VideoConfig) -> tuple[int, int, int]:
    """Token grid (frames, height, width) after patching the latent."""
    f, h, w, _ = video.latent_shape(self.in_channels)
    pf, ph, pw = self.patch
    if f % pf or h % ph or w % pw:
      raise UserError(f"latent {f}x{h}x{w} is not divisible by model.patch={self.patch}")
    return f // pf, h // ph, w // pw

  def num_tokens(self, video: VideoConfig) -> int:
    f, h, w = self.grid(video)
    return f * h * w
