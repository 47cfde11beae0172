"""Damaged run folders: corrupt checkpoints fall back, torn metrics are repaired, errors recorded."""
from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import shutil

import pytest

from harness import __main__ as harness_cli
from harness import metrics
from test_run_identity import BASE, QUICK, harness, losses, summary


def _run(out: pathlib.Path, *bindings: str) -> int:
  return harness_cli.main([QUICK, *(f"--gin_bindings={b}" for b in (
      *BASE, f"run.output_dir='{out}'", "run.run_name='r'", *bindings))])


@pytest.fixture(scope="module")
def eight_steps(tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("eight")
  assert _run(out, "run.steps=8") == 0
  return out / "r"


@pytest.fixture(scope="module")
def straight_twelve(tmp_path_factory) -> list[tuple[int, float]]:
  out = tmp_path_factory.mktemp("twelve")
  assert _run(out, "run.steps=12") == 0
  return losses(out / "r")


def _data_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
  return sorted((p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"),
                key=lambda p: -p.stat().st_size)


def _truncate(step_dir):
  path = _data_files(step_dir)[0]
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_metadata(step_dir):
  (step_dir / "default" / "_METADATA").unlink()


def _empty(step_dir):
  for child in step_dir.iterdir():
    shutil.rmtree(child) if child.is_dir() else child.unlink()


def _zero(step_dir):
  for path in _data_files(step_dir):
    path.write_bytes(bytes(path.stat().st_size))


def _overwrite(step_dir):
  path = _data_files(step_dir)[0]
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 64] = os.urandom(64)
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _drop_metadata, _empty, _zero, _overwrite],
                         ids=["truncated", "no_METADATA", "emptied", "zeroed", "overwritten"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(
    capsys, caplog, tmp_path, eight_steps, straight_twelve, damage):
  run_dir = tmp_path / "r"
  shutil.copytree(eight_steps, run_dir)
  damage(run_dir / "checkpoints" / "8")
  with caplog.at_level(logging.WARNING):
    rc, _, err = harness(capsys, tmp_path, "run.steps=12")
  assert rc == 0, err
  warned = [r.getMessage() for r in caplog.records if "is unreadable" in r.getMessage()]
  assert warned and warned[0].startswith(f"checkpoint {run_dir}/checkpoints/8 is unreadable")
  s = summary(run_dir)
  assert (s["status"], s["first_step"], s["steps_run"]) == ("ok", 4, 8)
  assert losses(run_dir) == straight_twelve  # the corrupt weights never reached a step
  assert [p.name.split("-")[0] for p in (run_dir / "checkpoints-corrupt").iterdir()] == ["8"]


def test_no_readable_checkpoint_is_one_line(capsys, tmp_path, eight_steps):
  run_dir = tmp_path / "r"
  shutil.copytree(eight_steps, run_dir)
  for step in ("4", "8"):
    _zero(run_dir / "checkpoints" / step)
  rc, _, err = harness(capsys, tmp_path, "run.steps=12")
  assert rc == 2 and err.count("\n") == 1
  assert err.startswith(f"error: run.resume=True: no readable checkpoint in {run_dir}/checkpoints")
  assert summary(run_dir)["status"] == "error"  # the attempt is recorded, the old one archived
  assert summary(run_dir / "attempts" / "1")["status"] == "ok"


def test_a_torn_metrics_line_is_repaired_with_a_warning(capsys, caplog, tmp_path, eight_steps,
                                                        straight_twelve):
  run_dir = tmp_path / "r"
  shutil.copytree(eight_steps, run_dir)
  path = run_dir / "metrics.jsonl"
  path.write_text(path.read_text() + '{"step": 8, "step_ti')
  with caplog.at_level(logging.WARNING):
    rc, _, err = harness(capsys, tmp_path, "run.steps=12")
  assert rc == 0, err
  assert any(r.getMessage() == f"{path}: dropping unreadable line 9 (a write cut short?)"
             for r in caplog.records)
  assert losses(run_dir) == straight_twelve


def test_no_timed_step_writes_null_not_nan(tmp_path):
  metrics.write_json_atomic(tmp_path / "s.json", {"step_time_s": metrics.time_stats([])})
  text = (tmp_path / "s.json").read_text()
  assert "NaN" not in text and json.loads(text)["step_time_s"]["median"] is None


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "No space left on device"),
                                          (errno.EROFS, "Read-only file system")])
def test_a_write_that_fails_is_one_line_and_recorded(capsys, tmp_path, monkeypatch, code,
                                                     reason):
  def failing_step(self, record, scalars):
    raise OSError(code, reason, str(self.run_dir / "metrics.jsonl"))
  monkeypatch.setattr(metrics.MetricsWriter, "step", failing_step)
  rc, _, err = harness(capsys, tmp_path, "run.steps=3")
  assert rc == 2
  assert err == f"error: cannot write {tmp_path / 'r' / 'metrics.jsonl'}: {reason}\n"
  s = summary(tmp_path / "r")
  assert s["status"] == "error" and reason in s["error"]


def test_a_profiler_window_after_the_last_step_is_refused(capsys, tmp_path):
  rc, _, err = harness(capsys, tmp_path, "profiler.enabled=True", "profiler.start_step=30",
                       "run.steps=20")
  assert rc == 2 and err == (
      "error: profiler.start_step=30: the window starts after the last step; choose a start in "
      "[0, run.steps=20) or profiler.enabled=False\n")
  assert not (tmp_path / "r").exists()


def test_a_window_over_every_timed_step_warns_and_writes_null(capsys, caplog, tmp_path):
  with caplog.at_level(logging.WARNING):
    rc, _, err = harness(capsys, tmp_path, "profiler.enabled=True", "profiler.start_step=2",
                         "profiler.num_steps=3", "run.steps=5")
  assert rc == 0, err
  assert any("cover every timed step" in r.getMessage() for r in caplog.records)
  text = (tmp_path / "r" / "summary.json").read_text()
  assert "NaN" not in text
  s = json.loads(text)
  assert s["step_time_s"]["n"] == 0 and s["step_time_s"]["median"] is None
  assert s["trace"]["collective_s"] > 0  # what such a run is for
