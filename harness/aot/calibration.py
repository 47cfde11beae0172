"""The uncertain costs of the AOT model: [lo, hi] ranges with their sources, and pricings from them.

Three costs decide most predictions and none is known exactly from a compile:

* layout ops (copies, transposes, relayouts, data-only slices): XLA's `estimated_cycles` charge them
  up to tens of times their HBM roofline (read + write at the chip's HBM bandwidth). The range spans
  the two, per op: lo = min(roofline, estimate), hi = max(roofline, estimate). Nominal: the estimate.
* attention kernels (Pallas splash): no `estimated_cycles`; priced by FLOPs at a fraction of MXU peak.
* ICI links: modelled at the published per-link bandwidth times an efficiency.

`ATTENTION_EFFICIENCY` and `ICI_EFFICIENCY` hold literature ranges until they are fitted against
published measurements; the fitting replaces the values here, in this one module.
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
ATTENTION_EFFICIENCY = {
    "v4": Range(0.30, 1.0, _ATTENTION_SOURCE),
    "v5e": Range(0.30, 1.0, _ATTENTION_SOURCE),
    "v5p": Range(0.30, 1.0, _ATTENTION_SOURCE),
    "v6e": Range(0.30, 1.0, _ATTENTION_SOURCE),
}
DEFAULT_ATTENTION_EFFICIENCY = Range(0.30, 1.0, _ATTENTION_SOURCE)

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
