"""Published, measured TPU step times the AOT model is calibrated against, with their derivations.

Each point names the aot run of experiments/calibration.gin that reproduces its setup. A per-step
number is derived from what was published; `scale` converts the predicted step of the run into the
measured unit (the v5p training run computes 4 samples where the measurement computed 1).
"""
from __future__ import annotations

import dataclasses

PR376 = "https://github.com/AI-Hypercomputer/maxdiffusion/pull/376"
README = "https://github.com/AI-Hypercomputer/maxdiffusion/blob/main/README.md"


@dataclasses.dataclass(frozen=True)
class Point:
  """One published measurement: where it is, what it says, and the per-step seconds it gives."""
  name: str
  run: str            # run name in the calibration sweep
  generation: str
  config: str
  url: str
  quote: str
  derivation: str
  measured_s: float
  fit: bool           # in the fit subset (else held out)
  scale: float = 1.0  # measured unit = scale * predicted step


def _batch_difference(batch1_s: float, batch2_s: float, steps: int) -> float:
  """A batch-2 step from two end-to-end times: 2 * (t(2) - t(1)) / steps."""
  return 2 * (batch2_s - batch1_s) / steps


_V6E = ("Wan 2.2 I2V A14B, 720x1280, 81 frames, 40 steps, v6e-8 (8 chips), dp=2 cp=4, global "
        "batch 2 (CFG batch 4)")
_DIFF = ("2 x ({b2} s - {b1} s) / 40 steps = {v:.2f} s: the difference of the batch-2 and batch-1 "
         "runs cancels the fixed costs (text encoding, VAE); a batch-2 step is taken as twice the "
         "per-video step (step time proportional to batch)")
_V7X = ("the end-to-end time over the steps = {v:.2f} s, an upper bound on the step: it includes "
        "text encoding and VAE decoding")

POINTS = (
    Point("pr376-v6e-ulysses", "calib-v6e-ulysses-aot", "v6e", _V6E + ", Ulysses (splash)", PR376,
          "Global Batch Size 1: Ulysses 251.45s; Global Batch Size 2: Ulysses 491.22s",
          _DIFF.format(b1=251.45, b2=491.22, v=_batch_difference(251.45, 491.22, 40)),
          _batch_difference(251.45, 491.22, 40), fit=True),
    Point("pr376-v6e-flash", "calib-v6e-flash-aot", "v6e",
          _V6E + ", flash (heads sharded over context by GSPMD)", PR376,
          "Global Batch Size 1: Flash 285.56s; Global Batch Size 2: Flash 533.67s",
          _DIFF.format(b1=285.56, b2=533.67, v=_batch_difference(285.56, 533.67, 40)),
          _batch_difference(285.56, 533.67, 40), fit=False),
    Point("readme-v7x8-wan21", "calib-v7x8-flash-aot", "tpu7x",
          "Wan 2.1 14B, 720p, 81 frames, 50 steps, v7x-8 (4 chips), dp2 context4, Tokamax flash, "
          "batch 1 with CFG DP", README,
          "v7x-8 | WAN 2.1 | Tokamax Flash | 50 | dp2-fsdp1-context4-tp1 | 249.3",
          _V7X.format(v=249.3 / 50), 249.3 / 50, fit=True),
    Point("readme-v7x8-wan22", "calib-v7x8-flash-aot", "tpu7x",
          "Wan 2.2 A14B, 720p, 81 frames, 40 steps, v7x-8 (4 chips), dp2 context4, Tokamax flash, "
          "batch 1 with CFG DP", README,
          "v7x-8 | WAN 2.2 | Tokamax Flash | 40 | dp2-fsdp1-context4-tp1 | 194.4",
          _V7X.format(v=194.4 / 40), 194.4 / 40, fit=False),
    Point("readme-v7x16-wan21", "calib-v7x16-flash-aot", "tpu7x",
          "Wan 2.1 14B, 720p, 81 frames, 50 steps, v7x-16 (8 chips), dp2 context8, Tokamax flash, "
          "batch 1 with CFG DP", README,
          "v7x-16 | WAN 2.1 | Tokamax Flash | 50 | dp2-fsdp1-context8-tp1 | 127.1",
          _V7X.format(v=127.1 / 50), 127.1 / 50, fit=False),
    Point("readme-v7x16-wan22", "calib-v7x16-flash-aot", "tpu7x",
          "Wan 2.2 A14B, 720p, 81 frames, 40 steps, v7x-16 (8 chips), dp2 context8, Tokamax "
          "flash, batch 1 with CFG DP", README,
          "v7x-16 | WAN 2.2 | Tokamax Flash | 40 | dp2-fsdp1-context8-tp1 | 106.0",
          _V7X.format(v=106.0 / 40), 106.0 / 40, fit=False),
    Point("readme-v5p8-train", "calib-v5p-train-aot", "v5p",
          "Wan 2.1 14B training, 720p (1280x720), 81 frames, v5p-8 (4 chips), fsdp=4, batch 1, "
          "flash", README,
          "completed step: 3, seconds: 36.016, TFLOP/s/device: 135.864",
          "the steady-state step (steps 2-6 read 36.006-36.016 s); the harness run computes 4 "
          "samples (batch 4 over fsdp=4, one a chip) where the measurement computed 1 sample "
          "sequence-sharded over 4 chips, so a quarter of the predicted step is compared",
          36.016, fit=True, scale=0.25),
)
