"""Typed outputs read every file the harness writes and write it back unchanged."""
import copy
import json
import math
import os

import pytest

from harness.aot import report as aot_report_lib
from harness.outputs import AotReport, EvalSummary, Summary, TimeStats, TraceReport, dumps
from harness.profiling import analyze
from launch import results, table

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
# Written by `python -m harness --gin_file=gin/quickstart.gin` and by the same config with
# run.mode='aot', aot.topology='v5p:2x2x2' and hardware/tpu_async_a2a.gin.
SUMMARY_FILE = os.path.join(FIXTURES, "outputs", "quickstart_summary.json")
AOT_FILE = os.path.join(FIXTURES, "outputs", "quickstart_aot.json")


def _load(path):
  with open(path) as f:
    return f.read()


def test_summary_of_a_quickstart_run_round_trips_to_the_same_bytes():
  text = _load(SUMMARY_FILE)
  summary = Summary.from_json(json.loads(text))
  assert summary.to_json() == json.loads(text) and dumps(summary) == text
  assert summary.extra == {} and summary.attention.num_chunks == 2
  assert summary.step_time_s.n == len(summary.step_times_s) == summary.timed_steps
  assert isinstance(summary.eval, EvalSummary) and isinstance(summary.eval.step_time_s, TimeStats)
  assert isinstance(summary.trace, TraceReport) and summary.trace.per_step is None
  assert summary.xla_flags == json.loads(text)["XLA_FLAGS"]


def test_aot_report_of_a_compile_round_trips_to_the_same_bytes(tmp_path):
  text = _load(AOT_FILE)
  report = AotReport.from_json(json.loads(text))
  assert report.to_json() == json.loads(text) and report.extra == {}
  assert report.topology.name == "v5p:2x2x2" and report.attention.num_chunks == 2
  assert report.has_prediction and report.sequence_length is None
  aot_report_lib.write_report(json.loads(text), str(tmp_path))
  assert (tmp_path / "aot.json").read_text() == text


def test_older_summary_missing_keys_reads_as_none_and_writes_back_unchanged():
  older = json.loads(_load(SUMMARY_FILE))
  for key in ("sequence_length", "trace", "eval", "steps_completed", "first_step", "source"):
    older.pop(key, None)
  del older["attention"]["pipelined_projections"]
  older["model"]["seq_len"] = 512  # where summaries before sequence_length kept it
  summary = Summary.from_json(copy.deepcopy(older))
  assert (summary.trace, summary.eval, summary.first_step) == (None, None, None)
  assert summary.attention.pipelined_projections is None and summary.sequence_length == 512
  assert summary.to_json() == older


def test_unknown_keys_are_kept_at_every_level():
  newer = json.loads(_load(SUMMARY_FILE))
  newer["energy_j"] = {"total": 1.5}
  newer["attention"]["window"] = 128
  newer["trace"]["dma_s"] = 0.25
  summary = Summary.from_json(copy.deepcopy(newer))
  assert summary.extra == {"energy_j": {"total": 1.5}}
  assert summary.attention.extra == {"window": 128} and summary.trace.extra == {"dma_s": 0.25}
  assert summary.to_json() == newer


def test_failure_summary_and_trace_error_hold_only_their_keys():
  failure = Summary.failure("error", "boom", "train", "abc", 2)
  assert failure.to_json() == {"status": "error", "error": "boom", "mode": "train",
                               "fingerprint": "abc", "attempt": 2}
  assert Summary.from_json(failure.to_json()).to_json() == failure.to_json()
  assert TraceReport.failed("unreadable").to_json() == {"error": "unreadable"}


def test_summary_built_in_code_writes_nulls_but_not_absent_sections():
  built = Summary(status="ok", step_time_s=TimeStats(median=float("nan"), p10=None, p90=None,
                                                     n=0)).to_json()
  assert built["error"] is None and built["compile_time_s"] is None
  assert not {"trace", "eval", "source", "steps_completed"} & set(built)
  assert math.isnan(built["step_time_s"]["median"])
  assert json.loads(dumps(built))["step_time_s"]["median"] is None  # strict JSON: no NaN


def test_aot_report_that_does_not_fit_round_trips():
  full = json.loads(_load(AOT_FILE))
  keys = ("topology", "libtpu_flags", "flags_applied_via", "hardware", "hbm_capacity_bytes",
          "hbm_limit_bytes", "step", "compile_time_s")
  oom = {k: full[k] for k in keys}
  oom.update(fits_hbm=False, hbm_bytes=None, hbm_margin_bytes=-1.0, error="does not fit in HBM")
  report = AotReport.from_json(copy.deepcopy(oom))
  assert not report.has_prediction and report.collectives is None and report.to_json() == oom


def test_trace_report_of_the_tpu_fixture_round_trips():
  result = analyze(os.path.join(FIXTURES, "tpu_capture"))
  report = TraceReport.from_json(copy.deepcopy(result))
  assert report.to_json() == result and len(report.per_step) == report.steps
  kept = report.without_steps().to_json()
  assert "per_step" not in kept and kept == {k: v for k, v in result.items() if k != "per_step"}


def test_launcher_reads_real_files_as_written(tmp_path):
  run_dir = tmp_path / "q-c2"
  run_dir.mkdir()
  (run_dir / "summary.json").write_text(_load(SUMMARY_FILE))
  complete, summary, _ = results.read_outputs(run_dir, "train")
  assert complete and summary == json.loads(_load(SUMMARY_FILE))
  record = {"run": "q-c2", "status": "ok", "mode": "train", "hardware": "local",
            "point": {"attention.num_chunks": 2}, "summary": summary}
  (group,) = table.build([record])
  row = group.rows[2]
  assert (row.variant, row.degree, row.sequence) == ("ulysses", 8, 32)
  assert row.exposed_s == pytest.approx(summary["trace"]["exposed_collective_s"])
  assert group.platforms == ["cpu"]
