"""AOT compiles of the tiny model's real train and eval steps for 4- and 8-chip TPU topologies."""
import json

import pytest

from harness import api
from harness.aot.entry import run_aot_mode


def _aot(tmp_path, topology, step, layers=1, hardware="tpu_async_a2a"):
  loaded = api.load(["quickstart.gin", f"hardware/{hardware}.gin"], [
      "run.mode = 'aot'", f"run.output_dir = '{tmp_path}'", "run.run_name = 'aot'",
      f"aot.topology = '{topology}'", f"aot.step = '{step}'", f"model.num_layers = {layers}"],
      abstract=True)
  report = run_aot_mode(loaded)
  on_disk = json.loads((tmp_path / "aot" / "aot.json").read_text())
  assert on_disk["predicted_step_s"] == pytest.approx(report["predicted_step_s"])
  assert (tmp_path / "aot" / "config.gin").exists()
  assert (tmp_path / "aot" / "aot_hlo.txt").exists()
  return report


def _check_overlapped(report, devices):
  assert report["topology"]["num_devices"] == devices
  assert report["mesh"]["context"] == devices
  assert report["attention"] == {"variant": "ulysses", "num_chunks": 2, "kernel": "xla",
                                 "pipelined_projections": False}
  assert report["fits_hbm"] is True and report["hbm_bytes"] > 0
  a2a = report["collectives"]["all-to-all"]
  assert a2a["count"] > 0 and a2a["async_count"] == a2a["count"]
  assert any(a["compute_between_s"] > 0 for a in report["async_collectives"]
             if a["kind"] == "all-to-all")
  assert report["unknown_trip_counts"] == 0
  assert report["libtpu_flags"][0] == "--xla_tpu_enable_async_all_to_all=true"


def test_eval_step_8_chips_scanned_layers(tmp_path):
  report = _aot(tmp_path, "v5p:2x2x2", "eval", layers=2)
  _check_overlapped(report, 8)
  a2a = report["collectives"]["all-to-all"]
  # The two layers are one scanned body: each all-to-all in it runs twice.
  assert a2a["executed"] == 2 * a2a["count"]


def test_eval_step_4_chips(tmp_path):
  _check_overlapped(_aot(tmp_path, "v5p:2x2x1", "eval"), 4)


def test_eval_step_without_flags_is_synchronous(tmp_path):
  report = _aot(tmp_path, "v5p:2x2x1", "eval", hardware="tpu_default")
  assert report["libtpu_flags"] == []
  assert report["collectives"]["all-to-all"]["async_count"] == 0
  assert report["hidden_fraction"] == 0.0


@pytest.mark.slow
def test_train_step_8_chips(tmp_path):
  _check_overlapped(_aot(tmp_path, "v5p:2x2x2", "train"), 8)


@pytest.mark.slow
def test_train_step_4_chips(tmp_path):
  _check_overlapped(_aot(tmp_path, "v5p:2x2x1", "train"), 4)
