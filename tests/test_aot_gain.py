"""Gain decomposition (overlap, communication, compute by kind) and its bounds and verdict."""
import pytest

from harness.aot import calibration, gain
from harness.aot.analysis import analyze_hlo
from test_aot_attribution import A2A, ATT, HW, MODULE, TWO_CHIPS, US

START = ("%a2a-start = ((bf16[1,256,128]{2,1,0}), bf16[1,256,128]{2,1,0}) all-to-all-start(%q)")
DONE = "  %a2a-done = bf16[1,256,128]{2,1,0} all-to-all-done(%a2a-start)\n"
SYNC = MODULE.replace(START, "%a2a-done = bf16[1,256,128]{2,1,0} all-to-all(%q)").replace(DONE, "")
# Everything but the exchange, as in MODULE: copy 5 us, in-place update 0.1 us, matmul 3 us, splash,
# elementwise 2 us.
COMPUTE = 5 * US + 0.1 * US + 3 * US + ATT + 2 * US


def _analyze(text):
  return analyze_hlo(text, HW, TWO_CHIPS, (2, 1))


def test_async_over_sync_is_all_overlap():
  base, other = _analyze(SYNC), _analyze(MODULE)
  g = gain.predicted_gain(base, other)
  assert base["predicted_step_s"] == pytest.approx(COMPUTE + A2A)
  assert other["predicted_step_s"] == pytest.approx(COMPUTE)
  assert g.total == pytest.approx(A2A / (COMPUTE + A2A))
  assert g.overlap == pytest.approx(g.total)
  assert g.communication == pytest.approx(0.0, abs=1e-12)
  assert g.compute == {"attention": 0.0, "matmul": 0.0, "layout": 0.0, "other": 0.0}
  # Lowest: the slowest compute (layout at its larger cost, attention at its lowest efficiency) with
  # the fast link; highest: the fastest compute with the fast link (at half speed, only 3 us +
  # the kernel would be hidden of the 65.5 us exchange).
  assert g.verdict == "pays" and g.decided_by is None
  assert g.bounds[0] > 0 and g.bounds[0] <= g.total <= g.bounds[1]
  slow_att = ATT / calibration.attention_range("test").lo
  hi_layout = 5 * US + 20_004 / 1e10   # copy estimate, update at its roofline
  worst = COMPUTE - ATT + slow_att - 5.1 * US + hi_layout
  assert g.bounds[0] == pytest.approx(A2A / (worst + A2A))
  assert g.bounds[1] == pytest.approx(A2A / (COMPUTE - 5 * US + 4 * US + A2A))
  assert g.sentence("C=2") == (f"C=2: +{g.total * 100:.1f} % predicted = +{g.overlap * 100:.1f} % "
                               f"overlap (uncertain: +{g.bounds[0] * 100:.1f} % … "
                               f"+{g.bounds[1] * 100:.1f} %) → pays")


def test_without_async_overlap_is_zero():
  # Both synchronous; the second sends a second exchange: slower, all of it communication.
  twice = SYNC.replace("  ROOT %out", "  %again = bf16[1,256,128]{2,1,0} all-to-all(%q)\n  ROOT %out")
  base, other = _analyze(SYNC), _analyze(twice)
  g = gain.predicted_gain(base, other)
  assert other["hidden_under_attention_s"] == 0.0
  assert g.overlap == 0.0
  assert g.communication == pytest.approx(-A2A / (COMPUTE + A2A))
  assert g.total == pytest.approx(g.communication)
  assert g.verdict == "does not pay"


def test_layout_decides_an_uncertain_gain():
  # The other program is 1 us faster in XLA's estimate of its copy, but moves twice the bytes.
  other = MODULE.replace('copy(%x), backend_config={"estimated_cycles":"5000"}',
                         'copy(%x), backend_config={"estimated_cycles":"4000"}').replace(
                             "bf16[10000]{0:T(2,128)} copy", "bf16[30000]{0:T(2,128)} copy")
  g = gain.predicted_gain(_analyze(MODULE), _analyze(other))
  assert g.compute["layout"] == pytest.approx(1 * US / (COMPUTE))
  assert g.bounds[0] < 0 < g.bounds[1]
  assert g.verdict == "undetermined" and g.decided_by == "layout"
  assert "→ undetermined (decided by layout)" in g.sentence("C=4")


def test_missing_prediction_gives_none():
  assert gain.predicted_gain({"predicted_step_s": None}, _analyze(MODULE)) is None
  assert gain.gains_by_chunks({1: _analyze(SYNC), 2: _analyze(MODULE), 3: {"error": "x"}}).keys() \
      == {2}


def test_sweep_report_writes_predicted_gain(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from launch import aot_gain, report  # pylint: disable=g-import-not-at-top
  records = [{"run": f"tp-c{c}-aot", "status": "ok", "mode": "aot", "hardware": "v5p16",
              "point": {"attention.num_chunks": c, "resolution": "720p"}, "summary": None,
              "aot": aot, "error": None}
             for c, aot in ((1, _analyze(SYNC)), (2, _analyze(MODULE)))]
  (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  report.write_report(tmp_path)
  (entry,) = json.loads((tmp_path / "report.json").read_text())["predicted_gain"]
  assert entry["label"] == "v5p16 resolution=720p" and set(entry["predicted_gain"]) == {"2"}
  expected = gain.predicted_gain(records[0]["aot"], records[1]["aot"])
  written = entry["predicted_gain"]["2"]
  assert (written["total"], written["overlap"]) == pytest.approx((expected.total, expected.overlap))
  assert written["bounds"] == pytest.approx(list(expected.bounds))
  assert written["verdict"] == "pays"
  sentence = expected.sentence("v5p16 resolution=720p · C=2")
  assert aot_gain.written_sentences(tmp_path) == [sentence]
  assert f"- {sentence}" in (tmp_path / "report.md").read_text()
