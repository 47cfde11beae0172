"""The calibration fit and report on hand-built aot.json figures, with hand arithmetic."""
import json
import pathlib
import sys

import pytest

from harness import api
from harness.aot.entry import run_aot_mode

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))
import calibration  # pylint: disable=g-import-not-at-top,wrong-import-position
import calibration_points  # pylint: disable=g-import-not-at-top,wrong-import-position


def _aot(step, roofline, attention):
  scenario = lambda layout, att, ici, s: {"layout": layout, "attention": att, "ici": ici,
                                          "predicted_step_s": s}
  return {"fits_hbm": True, "predicted_step_s": step, "compute_by_kind_s": {"attention": attention},
          "bound_scenarios": [scenario("hi", "lo", "lo", step),
                              scenario("lo", "lo", "lo", roofline),
                              scenario("lo", "hi", "lo", roofline * 3)]}


def test_fit_is_exact_and_capped_at_one():
  pred = calibration.read_prediction(_aot(10.0, 8.0, 4.0), "r")
  # 6 s besides attention; 14 s measured leaves 8 s for 4 s of attention at peak: 0.5.
  assert calibration.fit_one(pred, 14.0, "estimate") == pytest.approx(0.5)
  assert calibration.predicted(pred, 0.5, "estimate") == pytest.approx(14.0)
  # Roofline layouts: 4 s besides attention, 10 s left for it: 0.4.
  assert calibration.fit_one(pred, 14.0, "roofline") == pytest.approx(0.4)
  assert calibration.fit_one(pred, 9.0, "estimate") == 1.0
  assert calibration.fit_one(pred, 5.0, "estimate") == 1.0


@pytest.mark.parametrize("aot,match", [
    ({"fits_hbm": False, "predicted_step_s": None, "error": "does not fit in HBM: X"}, "HBM: X"),
    ({"fits_hbm": True, "predicted_step_s": 1.0}, "no compute_by_kind_s")])
def test_unusable_runs_are_named(aot, match):
  with pytest.raises(ValueError, match=f"^r: .*{match}"):
    calibration.read_prediction(aot, "r")


def _points(monkeypatch):
  point = lambda name, gen, measured, fit, scale=1.0: calibration_points.Point(
      name, name, gen, "cfg", "u", "q", "d", measured, fit, scale)
  points = (point("a", "g1", 14.0, True), point("b", "g1", 21.0, False),
            point("c", "g2", 5.0, True, scale=0.5), point("d", "g2", 30.0, False))
  monkeypatch.setattr(calibration, "POINTS", points)
  return {"a": calibration.read_prediction(_aot(10.0, 8.0, 4.0), "a"),
          "b": calibration.read_prediction(_aot(15.0, 12.0, 6.0), "b"),
          "c": calibration.read_prediction(_aot(8.0, 8.0, 2.0), "c"),
          "d": calibration.read_prediction(_aot(8.0, 8.0, 2.0), "d")}


def test_calibrate_fits_per_generation_and_picks_the_layout_model(monkeypatch):
  result = calibration.calibrate(_points(monkeypatch))
  # g1 on a: 0.5 (estimate) -> b predicted 15 + 6 * (2 - 1) = 21, exact. g2 on c: 5 s measured
  # is 10 s of the run (scale 0.5), 6 s besides attention -> 2 / 4 = 0.5; d: 8 + 2 = 10 s against
  # 30 s measured, ratio 3. Roofline layouts give the same held-out errors; the tie keeps 'estimate'.
  assert result["attention_efficiency"] == pytest.approx({"g1": 0.5, "g2": 0.5})
  rows = {r["name"]: r for r in result["rows"]}
  assert rows["b"]["ratio"] == pytest.approx(1.0) and rows["b"]["within_band"]
  assert rows["c"]["predicted_s"] == pytest.approx(5.0) and rows["c"]["role"] == "fit"
  assert rows["d"]["ratio"] == pytest.approx(3.0) and not rows["d"]["within_band"]
  # d alone would need 2 s of attention to take 30 - 6 = 24 s.
  assert rows["d"]["row_efficiency"] == pytest.approx(2 / 24)
  assert result["held_out_error"]["max_abs_pct"] == pytest.approx(200.0)
  assert result["closing_note"].startswith("rows outside the band: d (ratio 3.00)")
  assert "does not carry over" in result["closing_note"]


def test_capped_efficiency_is_named_in_the_note(monkeypatch):
  preds = _points(monkeypatch)
  preds["a"] = calibration.read_prediction(_aot(20.0, 20.0, 4.0), "a")  # slower than measured
  result = calibration.calibrate(preds)
  rows = {r["name"]: r for r in result["rows"]}
  assert rows["a"]["attention_efficiency"] == 1.0 and rows["a"]["ratio"] == pytest.approx(0.7)
  assert "a (ratio 0.70): predicted slower than measured" in result["closing_note"]


def test_main_writes_and_copies_both_files(monkeypatch, tmp_path):
  preds = _points(monkeypatch)
  del preds
  for name, args in {"a": (10.0, 8.0, 4.0), "b": (15.0, 12.0, 6.0), "c": (8.0, 8.0, 2.0),
                     "d": (8.0, 8.0, 2.0)}.items():
    (tmp_path / "res" / name).mkdir(parents=True)
    (tmp_path / "res" / name / "aot.json").write_text(json.dumps(_aot(*args)))
  assert calibration.main([str(tmp_path / "res"), "--copy_to", str(tmp_path / "copy")]) == 0
  data = json.loads((tmp_path / "copy" / "calibration.json").read_text())
  assert [r["name"] for r in data["rows"]] == ["a", "b", "c", "d"]
  markdown = (tmp_path / "res" / "calibration.md").read_text()
  assert "| d | held out | cfg | 30.00 | 10.00 | 3.00 |" in markdown


def test_no_prediction_at_all_is_one_line_error(monkeypatch, tmp_path, capsys):
  _points(monkeypatch)
  assert calibration.main([str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: no run in ") and err.count("\n") == 1


def test_a_run_without_prediction_is_a_row_the_note_names(monkeypatch):
  preds = _points(monkeypatch)
  preds["d"] = "d: no prediction (does not fit in HBM: X)"
  result = calibration.calibrate(preds)
  rows = {r["name"]: r for r in result["rows"]}
  assert rows["d"]["ratio"] is None and not rows["d"]["within_band"]
  assert result["held_out_error"]["max_abs_pct"] == pytest.approx(0.0)
  assert result["closing_note"] == ("rows outside the band: d: no prediction (d: no prediction "
                                    "(does not fit in HBM: X))")
  assert "| d | held out | cfg | 30.00 | — | — | — | — |" in calibration.to_markdown(result)


def test_shipped_points_are_consistent():
  runs = {p.run for p in calibration_points.POINTS}
  gin = (pathlib.Path(__file__).resolve().parents[1] / "experiments" / "calibration.gin").read_text()
  assert all(f"'name': '{r[len('calib-'):-len('-aot')]}'" in gin for r in runs)
  fit_generations = {p.generation for p in calibration_points.POINTS if p.fit}
  assert fit_generations == {p.generation for p in calibration_points.POINTS}
  pr376 = [p for p in calibration_points.POINTS if p.name == "pr376-v6e-ulysses"][0]
  assert pr376.measured_s == pytest.approx(2 * (491.22 - 251.45) / 40) and pr376.fit


def test_reanalysis_of_saved_hlo_reproduces_the_report(tmp_path):
  report = run_aot_mode(api.load(["quickstart.gin", "hardware/tpu_async_a2a.gin"], [
      "run.mode = 'aot'", f"run.output_dir = '{tmp_path}'", "run.run_name = 'aot'",
      "aot.topology = 'v5p:2x2x2'", "aot.step = 'eval'", "model.num_layers = 1",
      "mesh.data = 2"], abstract=True))
  saved = json.loads((tmp_path / "aot" / "aot.json").read_text())
  again = calibration.reanalyze(saved, str(tmp_path / "aot" / "aot_hlo.txt"))
  assert again["predicted_step_s"] == pytest.approx(report["predicted_step_s"], rel=1e-12)
  assert again["comm_s"] == pytest.approx(report["comm_s"], rel=1e-12) and report["comm_s"] > 0
