"""The uncertain costs of the AOT model: [lo, hi] ranges with their sources, and pricings from them.

Three costs decide most predictions and none is known exactly from a compile:

* layout ops (copies, transposes, relayouts, data-only slices): XLA's `estimated_cycles` charge them
  up to tens of times their HBM roofline (read + write at the chip's HBM bandwidth). The range spans
  the two, per op: lo = min(roofline, estimate), hi = max(roofline, estimate). Nominal: the estimate.
* attention kernels (Pallas splash): no `estimated_cycles`; priced by FLOPs at a fraction of MXU peak.
* ICI links: modelled at the published per-link bandwidth times an efficiency.

`FITTED_ATTENTION_EFFICIENCY` holds the efficiencies fitted against published measurements by
experiments/calibration.py (report: experiments/results/calibration.md); where a generation has one,
its `ATTENTION_EFFICIENCY` range runs from the lowest efficiency any of its measurements implies to
MXU peak, and aot.json adds `predicted_step_s_calibrated`. `ICI_EFFICIENCY` stays an assumed range:
communication is 1-11 % of the calibrated steps, too little for one step time a setup to fit it.
"""
from __future__ import annotations

import dataclasses
import itertools

LAYOUT_MODES = ("estimate", "lo", "hi")


@dataclasses.dataclass(frozen=True)
class Range:
  """An uncertain parameter: lo and hi values and where they come from."""
  lo: float
  hi: float
  source: str

  def to_dict(self) -> dict:
    return {"lo": self.lo, "hi": self.hi, "source": self.source}


# Fraction of MXU peak a Pallas attention kernel reaches (FLOPs / peak / seconds).
# hi = 1.0: peak, the pricing before bounds existed (an upper bound by definition).
# lo = 0.30: maxdiffusion README, Wan 2.1 14B training on v5p-8 (720p, 81 frames, fsdp=4, batch 1):
#   ~136 TFLOP/s per device of 459 TFLOP/s peak = 0.30 over the whole step, of which self-attention
#   at 75,600 tokens is most of the FLOPs (https://github.com/AI-Hypercomputer/maxdiffusion README).
_ATTENTION_SOURCE = ("lo: maxdiffusion README, Wan 2.1 14B training on v5p-8, ~136 of 459 TFLOP/s "
                     "per device (whole step); hi: 100 % of MXU peak")
# Where published measurements exist, lo is the lowest efficiency any one of them implies alone
# (the `row_efficiency` of experiments/results/calibration.json).
_CALIBRATED_SOURCE = ("lo: lowest efficiency a published measurement of this generation implies "
                      "(experiments/results/calibration.md); hi: 100 % of MXU peak")
ATTENTION_EFFICIENCY = {
    "v4": Range(0.30, 1.0, _ATTENTION_SOURCE),
    "v5e": Range(0.30, 1.0, _ATTENTION_SOURCE),
    "v5p": Range(0.30, 1.0, _ATTENTION_SOURCE),
    "v6e": Range(0.35, 1.0, _CALIBRATED_SOURCE),     # PR #376 Ulysses 0.356, flash 0.383
    "tpu7x": Range(0.24, 1.0, _CALIBRATED_SOURCE),   # README v7x rows 0.245-0.272
}
DEFAULT_ATTENTION_EFFICIENCY = Range(0.30, 1.0, _ATTENTION_SOURCE)


@dataclasses.dataclass(frozen=True)
class Fitted:
  """A calibrated value and where it comes from (fit rows, held-out error)."""
  value: float
  source: str

  def to_dict(self) -> dict:
    return {"value": self.value, "source": self.source}


# Held-out error over the 4 held-out rows: mean 3.4 %, worst 5.8 % (all within [0.8, 1.25]).
_FIT = ("experiments/calibration.py over experiments/calibration.gin (WAN 14B, 720p, 81 frames, "
        "splash, XLA's layout estimates); see experiments/results/calibration.md. ")
FITTED_ATTENTION_EFFICIENCY = {
    "v6e": Fitted(0.356, _FIT + "Fit on maxdiffusion PR #376 Ulysses, v6e-8 dp2 cp4 (11.99 s a "
                               "batch-2 step); held out: its flash row (measured/predicted 0.96)."),
    "tpu7x": Fitted(0.264, _FIT + "Fit on the maxdiffusion README's v7x-8 WAN 2.1 Tokamax flash "
                                  "row (249.3 s / 50 steps, an upper bound); held out: v7x-8 WAN "
                                  "2.2, v7x-16 WAN 2.1 and 2.2 (0.97-1.06)."),
    # v5p's range keeps the literature lo: its one measurement (a training step with offloaded
    # remat, reproduced here without offload at batch 4) has no held-out check.
    "v5p": Fitted(0.485, _FIT + "Fit on the maxdiffusion README's v5p-8 Wan 2.1 14B training "
                                "step (36.0 s); no held-out v5p row."),
}


def fitted_attention_efficiency(generation: str) -> Fitted | None:
  """The calibrated attention-kernel efficiency of a generation, if it has been fitted."""
  return FITTED_ATTENTION_EFFICIENCY.get(generation)


# Achieved share of the published per-link ICI bandwidth (Google Cloud TPU system-architecture pages).
# hi = 1.0: the published figure. lo = 0.5: an assumption (no published achieved all-to-all bandwidth
# on TPU was found); to be replaced by a fitted value.
ICI_EFFICIENCY = Range(0.5, 1.0, "lo: assumed 50 % of the published link bandwidth (unfitted); "
                                 "hi: published per-link bandwidth (cloud.google.com/tpu/docs)")

LAYOUT_SOURCE = ("lo: HBM roofline, (bytes read + written) / HBM bandwidth; hi: XLA's "
                 "estimated_cycles / clock (per op, whichever is larger)")


@dataclasses.dataclass(frozen=True)
class Pricing:
  """How the uncertain costs are priced in one simulation."""
  layout: str = "estimate"            # 'estimate' (XLA's cycles), 'lo' or 'hi' (see module docstring)
  attention_efficiency: float = 1.0   # fraction of MXU peak a Pallas attention kernel reaches
  ici_efficiency: float = 1.0         # fraction of the published link bandwidth

  def __post_init__(self):
    if self.layout not in LAYOUT_MODES:
      raise ValueError(f"layout pricing {self.layout!r}; valid: {LAYOUT_MODES}")
    if not 0 < self.attention_efficiency <= 1 or not 0 < self.ici_efficiency <= 1:
      raise ValueError("efficiencies must lie in (0, 1]")


NOMINAL = Pricing()
TERMS = ("layout", "attention", "ici")


def attention_range(generation: str) -> Range:
  return ATTENTION_EFFICIENCY.get(generation, DEFAULT_ATTENTION_EFFICIENCY)


def corner(generation: str, ends: dict[str, str]) -> Pricing:
  """The pricing with each uncertain term at its 'lo' or 'hi' cost end (lo cost = fast)."""
  attention = attention_range(generation)
  return Pricing(layout=ends["layout"],
                 attention_efficiency=attention.hi if ends["attention"] == "lo" else attention.lo,
                 ici_efficiency=ICI_EFFICIENCY.hi if ends["ici"] == "lo" else ICI_EFFICIENCY.lo)


def corners() -> list[dict[str, str]]:
  """Every combination of cost ends of the uncertain terms (2**3), lowest cost first."""
  return [dict(zip(TERMS, ends)) for ends in itertools.product(("lo", "hi"), repeat=len(TERMS))]


def sources(generation: str) -> dict[str, dict]:
  """The ranges behind the bounds, as recorded in aot.json."""
  return {"layout": {"lo": "hbm_roofline", "hi": "estimated_cycles", "source": LAYOUT_SOURCE},
          "attention_efficiency": attention_range(generation).to_dict(),
          "ici_efficiency": ICI_EFFICIENCY.to_dict()}
