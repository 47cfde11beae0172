"""Run identity: reruns, resumes with other configs, other modes and move-aside never lose results.

In-process runs of the quickstart model (compiles shared through the session's cache); the
cases about processes and signals are in test_run_integrity_processes.py.
"""
from __future__ import annotations

import json
import pathlib
import shutil

import pytest

from harness import __main__ as harness_cli

REPO = pathlib.Path(__file__).resolve().parent.parent
QUICK = f"--gin_file={REPO / 'gin' / 'quickstart.gin'}"
BASE = ("profiler.enabled=False", "run.final_eval=False", "run.progress=False",
        "run.checkpoint_every=4")


def harness(capsys, out: pathlib.Path, *bindings: str) -> tuple[int, str, str]:
  argv = [QUICK, *(f"--gin_bindings={b}" for b in
                   (*BASE, f"run.output_dir='{out}'", "run.run_name='r'", *bindings))]
  rc = harness_cli.main(argv)
  captured = capsys.readouterr()
  return rc, captured.out, captured.err


def files_of(run_dir: pathlib.Path) -> dict[str, bytes]:
  """Every file of a run folder (but the lock) with its bytes."""
  return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*"))
          if p.is_file() and p.name != ".lock"}


def summary(run_dir: pathlib.Path) -> dict:
  return json.loads((run_dir / "summary.json").read_text())


def losses(run_dir: pathlib.Path) -> list[tuple[int, float]]:
  return [(r["step"], r["loss"]) for r in map(json.loads,
                                              (run_dir / "metrics.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> pathlib.Path:
  """A finished 8-step run (checkpoints 4 and 8), copied by the tests that change it."""
  out = tmp_path_factory.mktemp("finished")
  rc = harness_cli.main([QUICK, *(f"--gin_bindings={b}" for b in (
      *BASE, f"run.output_dir='{out}'", "run.run_name='r'", "run.steps=8"))])
  assert rc == 0
  return out / "r"


@pytest.fixture()
def run_copy(finished, tmp_path) -> pathlib.Path:
  shutil.copytree(finished, tmp_path / "r")
  return tmp_path / "r"


def test_a_finished_run_invoked_again_changes_nothing(capsys, run_copy):
  before = files_of(run_copy)
  rc, out, _ = harness(capsys, run_copy.parent, "run.steps=8")
  assert rc == 0
  assert "is already complete (8 steps, status ok); nothing changed" in out
  assert files_of(run_copy) == before


def test_fewer_steps_than_done_changes_nothing(capsys, run_copy):
  before = files_of(run_copy)
  rc, out, _ = harness(capsys, run_copy.parent, "run.steps=5")
  assert rc == 0 and "already complete" in out
  assert files_of(run_copy) == before


@pytest.mark.parametrize("binding, diff", [
    ("attention.num_chunks=1", "attention.num_chunks: 2 there, 1 here"),
    ("optimizer.learning_rate=0.01", "optimizer.learning_rate: 0.003 there, 0.01 here"),
    ("run.seed=1", "run.seed: 0 there, 1 here"),
])
def test_resume_with_another_config_is_refused_naming_the_binding(capsys, run_copy, binding,
                                                                   diff):
  before = files_of(run_copy)
  rc, _, err = harness(capsys, run_copy.parent, "run.steps=12", binding)
  assert rc == 2
  assert err == (f"error: {run_copy} holds a run of another config ({diff}); choose another "
                 f"run.run_name, or set run.resume=False to move that run aside\n")
  assert files_of(run_copy) == before


def test_more_steps_continue_and_the_summary_covers_every_segment(capsys, run_copy, tmp_path):
  rc, _, _ = harness(capsys, run_copy.parent, "run.steps=12")
  assert rc == 0
  s = summary(run_copy)
  assert (s["status"], s["steps_run"], s["steps_completed"], s["attempt"]) == ("ok", 4, 12, 2)
  # Warm-up: steps 0-1 of the first segment and 8-9 after the second compile are untimed.
  assert s["step_time_s"]["n"] == 6 + 2
  records = [json.loads(ln) for ln in (run_copy / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == list(range(12))
  assert [r["step"] for r in records if not r["timed"]] == [0, 1, 8, 9]
  assert summary(run_copy / "attempts" / "1")["steps_completed"] == 8  # the earlier summary kept
  # Bitwise equal to an uninterrupted 12-step run.
  rc, _, _ = harness(capsys, tmp_path / "straight", "run.steps=12")
  assert rc == 0 and losses(run_copy) == losses(tmp_path / "straight" / "r")


def test_resume_false_moves_the_whole_run_aside(capsys, run_copy):
  before = files_of(run_copy)
  rc, _, _ = harness(capsys, run_copy.parent, "run.steps=4", "run.resume=False")
  assert rc == 0
  aside = [p for p in run_copy.parent.iterdir() if p.name.startswith("r.")]
  assert len(aside) == 1 and files_of(aside[0]) == before
  assert summary(run_copy)["steps_completed"] == 4
  assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["4"]


def test_eval_of_a_trained_run_restores_its_checkpoint_and_writes_beside_it(capsys, run_copy):
  before = files_of(run_copy)
  rc, out, _ = harness(capsys, run_copy.parent, "run.mode='eval'", "run.steps=3",
                       "run.warmup_steps=1")
  assert rc == 0
  assert f"evaluating the checkpoint of step 8 in {run_copy}" in out
  assert {k: v for k, v in files_of(run_copy).items() if not k.startswith("eval/")} == before
  s = summary(run_copy / "eval")
  assert (s["status"], s["mode"], s["source"]["checkpoint_step"]) == ("ok", "eval", 8)
  rc, out, _ = harness(capsys, run_copy.parent, "run.mode='eval'", "run.steps=3",
                       "run.warmup_steps=1")
  assert rc == 0 and "already complete" in out


def test_a_finished_run_without_checkpoints_cannot_continue(capsys, tmp_path):
  rc, _, _ = harness(capsys, tmp_path, "run.steps=3", "run.checkpoint_every=0")
  assert rc == 0
  before = files_of(tmp_path / "r")
  rc, out, _ = harness(capsys, tmp_path, "run.steps=3", "run.checkpoint_every=0")
  assert rc == 0 and "already complete" in out
  rc, _, err = harness(capsys, tmp_path, "run.steps=5", "run.checkpoint_every=0")
  assert rc == 2 and "finished 3 steps without a checkpoint" in err
  assert files_of(tmp_path / "r") == before


def test_outputs_without_a_run_record_are_not_overwritten(capsys, tmp_path):
  (tmp_path / "r").mkdir()
  (tmp_path / "r" / "summary.json").write_text('{"status": "ok"}')
  rc, _, err = harness(capsys, tmp_path, "run.steps=3")
  assert rc == 2 and "holds outputs without a run record (run.json)" in err
  assert (tmp_path / "r" / "summary.json").read_text() == '{"status": "ok"}'


def test_aot_of_a_trained_run_writes_beside_it(capsys, run_copy):
  before = files_of(run_copy)
  rc, out, err = harness(capsys, run_copy.parent, "run.mode='aot'", "aot.topology='v5p:2x2x1'",
                         "aot.step='eval'", "model.num_layers=1")
  assert rc == 0, err
  assert {k: v for k, v in files_of(run_copy).items() if not k.startswith("aot/")} == before
  report = json.loads((run_copy / "aot" / "aot.json").read_text())
  assert report["fingerprint"] == json.loads((run_copy / "aot" / "run.json").read_text())[
      "fingerprint"]
  rc, out, _ = harness(capsys, run_copy.parent, "run.mode='aot'", "aot.topology='v5p:2x2x1'",
                       "aot.step='eval'", "model.num_layers=1")
  assert rc == 0 and "already complete (its compile, status ok)" in out


def test_a_bad_aot_config_writes_nothing(capsys, tmp_path):
  rc, _, err = harness(capsys, tmp_path, "run.mode='aot'", "aot.topology='v5p:2x2x1'",
                       "attention.variant='dense'")
  assert rc == 2 and err.startswith("error: attention.num_chunks=2 needs attention.variant")
  assert not (tmp_path / "r").exists()
