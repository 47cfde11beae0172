"""Predicted gain of one compile over a baseline (C chunks vs single-shot), decomposed and bounded.

With B the baseline's predicted step, X the other's, e exposed and c total link time, h hidden:

  total         = (B - X) / B
  overlap       = (h_X / c_X - h_B / c_B) * c_B / B   the better (or worse) hiding, at the baseline's
                                                      communication: 0 when neither hides anything,
                                                      never more than the baseline's exposed share
  communication = (e_B - e_X) / B - overlap           more or fewer bytes and collectives
  compute[kind] = (compute_B[kind] - compute_X[kind]) / B   for attention, matmul, layout, other

so total = overlap + communication + sum(compute). `bounds` are the smallest and largest total over
the corners of the uncertain costs (calibration.corners()), each cost at the same end in both compiles
(they price the same hardware); the nominal total is included. The verdict is 'pays' when the lower
bound is above 0, 'does not pay' when the upper bound is below 0, else 'undetermined', decided by the
uncertain term whose range moves the total most (`decided_by`).
"""
from __future__ import annotations

import dataclasses

from harness import outputs
from harness.aot import calibration
from harness.aot.attribution import KINDS
from harness.outputs import AotReport


@dataclasses.dataclass(frozen=True)
class Gain:
  """A decomposed, bounded predicted gain (fractions of the baseline step; > 0 = faster)."""
  total: float
  overlap: float
  communication: float
  compute: dict[str, float]
  bounds: tuple[float, float]
  verdict: str
  decided_by: str | None
  swings: dict[str, float]

  def to_dict(self) -> dict:
    return {"total": self.total, "overlap": self.overlap, "communication": self.communication,
            "compute": dict(self.compute), "bounds": list(self.bounds), "verdict": self.verdict,
            "decided_by": self.decided_by, "swings": dict(self.swings)}

  def sentence(self, label: str) -> str:
    """E.g. 'C=4: +2.0 % predicted = +0.6 % overlap + 1.4 % layout (uncertain: -2.2 % … +2.0 %)
    → undetermined (decided by layout)'."""
    terms = [("overlap", self.overlap), ("communication", self.communication),
             *self.compute.items()]
    parts = [f"{_pct(terms[0][1])} overlap"] + [
        f"{'+' if v >= 0 else '−'} {abs(v) * 100:.1f} % {name}" for name, v in terms[1:]
        if abs(v) >= 5e-4]
    verdict = self.verdict + (f" (decided by {self.decided_by})" if self.decided_by else "")
    return (f"{label}: {_pct(self.total)} predicted = {' '.join(parts)} (uncertain: "
            f"{_pct(self.bounds[0])} … {_pct(self.bounds[1])}) → {verdict}")


def _pct(value: float) -> str:
  return f"{value * 100:+.1f} %".replace("-", "−")


def _hidden_share(report: AotReport) -> float:
  comm = report.comm_s
  return report.hidden_comm_s / comm if comm > 0 else 0.0


def _corner_key(scenario: dict) -> tuple[str, ...]:
  return tuple(scenario[t] for t in calibration.TERMS)


def _swings(totals: dict[tuple[str, ...], float]) -> dict[str, float]:
  """Per uncertain term: the largest change of the total when only that term goes lo -> hi."""
  swings = {}
  for i, term in enumerate(calibration.TERMS):
    changes = [abs(totals[key] - totals[key[:i] + ("hi",) + key[i + 1:]])
               for key in totals if key[i] == "lo" and key[:i] + ("hi",) + key[i + 1:] in totals]
    swings[term] = max(changes, default=0.0)
  return swings


def _report(value) -> AotReport | None:
  return outputs.coerce(AotReport, value) if isinstance(value, (dict, AotReport)) else None


def _predicts(report: AotReport | None) -> bool:
  needed = ("predicted_step_s", "compute_by_kind_s", "bound_scenarios", "comm_s", "hidden_comm_s")
  return report is not None and all(getattr(report, k) is not None for k in needed)


def predicted_gain(base: AotReport | dict | None, other: AotReport | dict | None) -> Gain | None:
  """The gain of `other` over `base` (two aot.json reports); None if either lacks a prediction."""
  base, other = _report(base), _report(other)
  if not (_predicts(base) and _predicts(other)):
    return None
  step = base.predicted_step_s
  total = (step - other.predicted_step_s) / step
  overlap = (_hidden_share(other) - _hidden_share(base)) * base.comm_s / step
  exposed = lambda r: r.comm_s - r.hidden_comm_s
  communication = (exposed(base) - exposed(other)) / step - overlap
  compute = {k: (base.compute_by_kind_s.get(k, 0.0) - other.compute_by_kind_s.get(k, 0.0))
             / step for k in KINDS}
  base_steps = {_corner_key(s): s["predicted_step_s"] for s in base.bound_scenarios}
  totals = {_corner_key(s): (base_steps[_corner_key(s)] - s["predicted_step_s"])
            / base_steps[_corner_key(s)]
            for s in other.bound_scenarios if _corner_key(s) in base_steps}
  values = [total, *totals.values()]
  bounds = (min(values), max(values))
  verdict = "pays" if bounds[0] > 0 else "does not pay" if bounds[1] < 0 else "undetermined"
  swings = _swings(totals)
  decided_by = max(swings, key=swings.get) if verdict == "undetermined" and swings else None
  return Gain(total, overlap, communication, compute, bounds, verdict, decided_by, swings)


def gains_by_chunks(reports: dict[int, AotReport | dict]) -> dict[int, Gain]:
  """Gains of every chunk count >= 2 over chunk count 1, where both have predictions."""
  base = reports.get(1)
  out = {}
  for chunks, report in sorted(reports.items()):
    gain = predicted_gain(base, report) if chunks >= 2 and base else None
    if gain is not None:
      out[chunks] = gain
  return out
