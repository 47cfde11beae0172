"""Train mode on 8 simulated devices: the loss falls, the step traces once, outputs follow §3.3."""
import json

import pytest

from harness import diffusion
from harness import run

TINY = ["models/tiny.gin", "attention/ulysses_chunked.gin", "hardware/cpu8.gin"]


def _bindings(tmp_path, **extra):
  base = {"run.output_dir": repr(str(tmp_path)), "run.run_name": "'t'", "run.progress": "False",
          "run.warmup_steps": "1"}
  base.update(extra)
  return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture()
def count_traces(monkeypatch):
  calls = []
  original = diffusion.flow_matching_loss

  def counting(*args, **kwargs):
    calls.append(1)
    return original(*args, **kwargs)

  monkeypatch.setattr(diffusion, "flow_matching_loss", counting)
  return calls


@pytest.mark.slow
def test_loss_falls_over_50_steps_and_step_traces_once(tmp_path, count_traces):
  summary = run.main(TINY, _bindings(tmp_path, **{"run.steps": 50, "run.batch_size": 2,
                                                  "optimizer.learning_rate": 3e-3}))
  assert summary["status"] == "ok" and summary["steps_run"] == 50
  assert len(count_traces) == 1  # one trace, one compile, 50 executions
  losses = [json.loads(l)["loss"] for l in open(tmp_path / "t" / "metrics.jsonl")]
  assert len(losses) == 50
  first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
  assert last < 0.75 * first, (first, last)


SUMMARY_KEYS = {"attention", "mesh", "devices", "step_time_s", "compile_time_s",
                "tokens_per_second", "params", "flops_per_step"}


def test_outputs_of_a_run(tmp_path):
  bindings = _bindings(tmp_path, **{"run.steps": 6, "run.checkpoint_every": 3,
                                    "run.final_eval": True, "sampler.denoising_steps": 2})
  summary = run.main(TINY, bindings)
  out = tmp_path / "t"
  on_disk = json.loads((out / "summary.json").read_text())
  assert on_disk["status"] == "ok"
  assert SUMMARY_KEYS <= set(on_disk)
  assert on_disk["attention"] == {**on_disk["attention"], "variant": "ulysses", "num_chunks": 2,
                                  "kernel": "xla"}
  assert on_disk["mesh"] == {"data": 1, "fsdp": 1, "context": 8, "tensor": 1}
  assert on_disk["devices"]["count"] == 8 and on_disk["devices"]["platform"] == "cpu"
  assert set(on_disk["step_time_s"]) == {"median", "p10", "p90", "n"}
  assert on_disk["step_time_s"]["n"] == 5  # 6 steps less 1 warm-up
  assert on_disk["versions"]["jax"] == "0.10.2"
  assert on_disk["eval"]["denoising_steps"] == 2
  assert summary["params"] == on_disk["params"] > 0
  records = [json.loads(l) for l in open(out / "metrics.jsonl")]
  assert [r["step"] for r in records] == list(range(6))
  assert all({"step", "step_time_s", "loss"} <= set(r) for r in records)
  assert "attention.num_chunks = 2" in (out / "config.gin").read_text()
  assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["3", "6"]
  assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_eval_mode_times_denoising_steps(tmp_path):
  summary = run.main(TINY, _bindings(tmp_path, **{"run.mode": "'eval'", "run.steps": 5,
                                                  "sampler.denoising_steps": 2}))
  assert summary["status"] == "ok" and summary["mode"] == "eval"
  assert summary["steps_run"] == 5 and summary["step_time_s"]["n"] == 4
  assert summary["final_metrics"]["x_rms"] > 0
