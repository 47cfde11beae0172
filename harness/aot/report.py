"""aot.json (harness.outputs.AotReport) and the console table."""
from __future__ import annotations

import os

from harness import outputs
from harness.outputs import AotReport

_GIB = 1024 ** 3


def write_report(report: dict | AotReport, out_dir: str, filename: str = "aot.json") -> str:
  """Writes the report as strict JSON (the keys of harness.outputs.AotReport); returns its path."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, filename)
  with open(path, "w") as f:
    f.write(outputs.dumps(outputs.coerce(AotReport, report), newline=False))
  return path


def _ms(seconds: float | None) -> str:
  return "n/a" if seconds is None else f"{seconds * 1e3:.3f} ms"


def _hbm_line(report: dict) -> str:
  """HBM use against libtpu's limit (the verdict is libtpu's) and the published capacity."""
  verdict = "fits" if report["fits_hbm"] else "DOES NOT FIT"
  used = "n/a" if report.get("hbm_bytes") is None else f"{report['hbm_bytes'] / _GIB:.2f} GiB"
  margin = report.get("hbm_margin_bytes")
  note = ("" if margin is None or margin >= 0 or not report["fits_hbm"] else
          " (memory_analysis's sum exceeds the limit libtpu enforced: confirm on hardware)")
  margin = "" if margin is None else f", margin {margin / _GIB:+.2f} GiB{note}"
  limit = report.get("hbm_limit_bytes") or report["hbm_capacity_bytes"]
  return (f"HBM per device: {used} of {limit / _GIB:.2f} GiB usable "
          f"({report['hbm_capacity_bytes'] / _GIB:.2f} GiB published) -> {verdict}{margin}")


def format_table(report: dict) -> str:
  """A short human-readable summary of one AOT report."""
  topo = report["topology"]
  lines = [f"AOT {report.get('step', '')} step for {topo['name']} ({topo['num_devices']} devices), "
           f"{len(report.get('libtpu_flags', []))} LIBTPU flags, compile "
           f"{report.get('compile_time_s', 0):.1f} s"]
  if report.get("hbm_bytes") is not None or report.get("fits_hbm") is False:
    lines.append(_hbm_line(report))
  if report.get("error"):
    lines.append(f"compile failed: {report['error']}")
    return "\n".join(lines)
  lines.append(f"{'collective':<20}{'count':>7}{'async':>7}{'executed':>10}")
  for kind, c in report["collectives"].items():
    lines.append(f"{kind:<20}{c['count']:>7}{c['async_count']:>7}{c['executed']:>10}")
  bounds = report.get("predicted_step_s_bounds")
  span = f" [{_ms(bounds[0])} … {_ms(bounds[1])}]" if bounds else ""
  lines.append(f"predicted step {_ms(report['predicted_step_s'])}{span} = compute "
               f"{_ms(report['compute_s'])} + exposed comm {_ms(report['exposed_comm_s'])}; "
               f"comm {_ms(report['comm_s'])}, hidden {report['hidden_fraction'] * 100:.1f} % of "
               f"min(comm, compute)")
  if report.get("predicted_step_s_calibrated") is not None:
    eff = report["calibration"]["attention_efficiency"]["value"]
    lines.append(f"calibrated step {_ms(report['predicted_step_s_calibrated'])} (attention kernels "
                 f"at {eff * 100:.1f} % of MXU peak, fitted to published measurements)")
  if report.get("compute_by_kind_s"):
    kinds = ", ".join(f"{k} {_ms(v)}" for k, v in report["compute_by_kind_s"].items())
    lines.append(f"compute by kind: {kinds}; layout ops move {report['layout_bytes'] / 1e9:.2f} GB; "
                 f"all-to-all hidden under attention "
                 f"{report['hidden_under_attention_fraction'] * 100:.1f} %")
  return "\n".join(lines)
