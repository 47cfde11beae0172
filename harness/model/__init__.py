"""WAN-style diffusion transformer in Flax NNX."""
from harness.model.config import DiTConfig, VideoConfig
from harness.model.dit import DiT

__all__ = ["DiT", "DiTConfig", "VideoConfig"]
