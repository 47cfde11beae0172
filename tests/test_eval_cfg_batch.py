"""Eval folds the CFG pair into data parallelism: batch 1 on mesh.data=2, as published setups run."""
import json

import pytest

from harness import api, run
from harness.aot.entry import run_aot_mode

TINY = ["models/tiny.gin", "attention/ulysses_chunked.gin", "hardware/cpu8.gin"]


def _bindings(tmp_path, name, **extra):
  base = {"run.output_dir": repr(str(tmp_path)), "run.run_name": repr(name),
          "run.progress": "False", "run.warmup_steps": "1", "run.mode": "'eval'", "run.steps": 3,
          "run.batch_size": 1, "sampler.denoising_steps": 3, "model.num_layers": 1}
  base.update(extra)
  return [f"{k}={v}" for k, v in base.items()]


def test_eval_batch_1_on_data_2_matches_data_1(tmp_path):
  folded = run.main(TINY, _bindings(tmp_path, "folded", **{"mesh.data": 2}))
  plain = run.main(TINY, _bindings(tmp_path, "plain"))
  assert folded["status"] == "ok" and folded["mesh"]["data"] == 2
  assert folded["mesh"]["context"] == 4 and plain["mesh"]["context"] == 8
  rms = [json.loads(l)["x_rms"] for l in open(tmp_path / "folded" / "metrics.jsonl")]
  want = [json.loads(l)["x_rms"] for l in open(tmp_path / "plain" / "metrics.jsonl")]
  assert len(rms) == 3 and rms == pytest.approx(want, rel=1e-5)


def test_train_still_needs_a_divisible_batch(tmp_path):
  with pytest.raises(ValueError, match=r"^run\.batch_size=1 is not divisible by "
                                       r"mesh\.data\*mesh\.fsdp=2$"):
    run.main(TINY, _bindings(tmp_path, "t", **{"run.mode": "'train'", "mesh.data": 2}),
             dry_run=True)


def test_eval_needs_the_cfg_pair_to_divide(tmp_path):
  with pytest.raises(ValueError, match=r"^run\.batch_size=1 gives an eval batch of 2 \(the CFG "
                                       r"pair\), not divisible by mesh\.data\*mesh\.fsdp=4$"):
    run.main(TINY, _bindings(tmp_path, "e", **{"mesh.data": 4}), dry_run=True)


def test_aot_eval_step_takes_batch_1_on_data_2(tmp_path):
  report = run_aot_mode(api.load(["quickstart.gin", "hardware/tpu_async_a2a.gin"], [
      "run.mode = 'aot'", f"run.output_dir = '{tmp_path}'", "run.run_name = 'aot'",
      "aot.topology = 'v5p:2x2x1'", "aot.step = 'eval'", "model.num_layers = 1",
      "run.batch_size = 1", "mesh.data = 2"], abstract=True))
  assert report["mesh"]["data"] == 2 and report["mesh"]["context"] == 2
  assert report["fits_hbm"] is True and report["collectives"]["all-to-all"]["count"] > 0
  with pytest.raises(ValueError, match=r"^run\.batch_size=1 is not divisible"):
    api.load(["quickstart.gin"], [
        "run.mode = 'aot'", f"run.output_dir = '{tmp_path}'", "run.run_name = 'aot_train'",
        "aot.topology = 'v5p:2x2x1'", "aot.step = 'train'", "run.batch_size = 1",
        "mesh.data = 2"], abstract=True)
