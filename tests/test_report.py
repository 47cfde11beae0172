"""Report: speedup and spread on synthetic results with known answers; files it writes."""
import json

import numpy as np
import pytest

from launch import report, stats, table


def test_min_max_interval_known_answer():
  got = stats.min_max([2.0, 2.2, 1.8], [1.0, 1.1, 0.9])
  assert got == stats.Speedup(2.0, pytest.approx(1.8 / 1.1), pytest.approx(2.2 / 0.9), "min-max")


def test_bootstrap_of_constant_step_times_is_exact():
  got = stats.bootstrap([[2.0, 2.0, 2.0], [2.0, 2.0]], [[1.0, 1.0, 1.0]])
  assert got == stats.Speedup(2.0, 2.0, 2.0, "bootstrap")


def test_bootstrap_catches_a_frequent_slow_step():
  # The candidate's median over a resample of 5 steps is 4.0 with probability
  # P(Binomial(5, 0.2) >= 3) = 5.8 % > 2.5 %, so the lower bound is 2 / 4 = 0.5.
  got = stats.bootstrap([[2.0] * 5], [[1.0, 1.0, 1.0, 1.0, 4.0]])
  assert got == stats.Speedup(2.0, 0.5, 2.0, "bootstrap")


def test_bootstrap_ignores_a_rare_slow_step():
  # 5 or more 4.0s out of 10 draws at p=0.1 has probability 0.16 %, under the 2.5 % tail.
  got = stats.bootstrap([[2.0] * 10], [[1.0] * 9 + [4.0]])
  assert got == stats.Speedup(2.0, 2.0, 2.0, "bootstrap")


def test_bootstrap_is_deterministic_and_bounded():
  base = [[1.00, 1.10, 1.05, 0.98], [1.02, 1.07, 1.01]]
  cand = [[0.90, 0.95, 0.97, 1.01], [0.93, 0.99]]
  first, second = stats.bootstrap(base, cand), stats.bootstrap(base, cand)
  assert first == second
  assert first.ratio == pytest.approx(1.02 / 0.96)
  assert 0.98 / 1.01 <= first.low <= first.ratio <= first.high <= 1.10 / 0.90


def test_speedup_picks_bootstrap_only_with_step_times():
  with_steps = [{"step_times_s": [2.0, 2.0], "step_time_s": {"median": 2.0}}]
  fast = [{"step_times_s": [1.0, 1.0], "step_time_s": {"median": 1.0}}]
  assert stats.speedup(with_steps, fast).method == "bootstrap"
  no_steps = [{"step_time_s": {"median": 2.0}}, {"step_time_s": {"median": 3.0}}]
  assert stats.speedup(no_steps, [{"step_time_s": {"median": 1.25}}]) == stats.Speedup(
      2.0, 1.6, 2.4, "min-max")
  assert stats.speedup([], fast) is None


def test_step_time_pools_repeats():
  assert stats.step_time([{"step_times_s": [1.0, 2.0, 3.0]}, {"step_times_s": [4.0, 5.0]}]) == (
      pytest.approx(3.0), pytest.approx(1.4), pytest.approx(4.6))
  assert stats.step_time([{"step_time_s": {"median": 2.0, "p10": 1.5, "p90": 3.0}},
                          {"step_time_s": {"median": 4.0, "p10": 3.5, "p90": 5.0}}]) == (
                              3.0, 1.5, 5.0)


def _record(run, chunks, mode="train", status="ok", median=None, trace=None, aot=None,
            res="720p", error=None):
  summary = None
  if median is not None:
    summary = {"status": "ok", "attention": {"variant": "ulysses", "num_chunks": chunks},
               "mesh": {"data": 1, "context": 8}, "sequence_length": 75600,
               "step_time_s": {"median": median, "p10": median * 0.9, "p90": median * 1.1}}
    if trace:
      summary["trace"] = trace
  return {"run": run, "status": status, "mode": mode, "hardware": "v5p16",
          "point": {"attention.num_chunks": chunks, "resolution": res},
          "summary": summary, "aot": aot, "error": error}


RECORDS = [
    _record("tp-c1-r0", 1, median=2.0, trace={"exposed_collective_s": 0.5,
                                              "overlap_fraction": 0.0}),
    _record("tp-c1-r1", 1, median=2.2, trace={"exposed_collective_s": 0.7,
                                              "overlap_fraction": 0.1}),
    _record("tp-c2-r0", 2, median=1.0, trace={"exposed_collective_s": 0.1,
                                              "overlap_fraction": 0.8}),
    _record("tp-c2-r1", 2, status="failed", error="Traceback\nValueError: boom"),
    _record("tp-c1-aot", 1, mode="aot", aot={"predicted_step_s": 1.5, "hidden_fraction": 0.0}),
    _record("tp-c2-aot", 2, mode="aot", aot={"predicted_step_s": 1.2, "hidden_fraction": 0.75}),
    _record("tp-c1-480p-aot", 1, mode="aot", res="480p", aot={"predicted_step_s": 0.6}),
]


def test_table_groups_and_known_speedups():
  groups = table.build(RECORDS)
  assert [(g.mode, g.label) for g in groups] == [("train", "v5p16 resolution=720p"),
                                                 ("aot", "v5p16 resolution=480p")]
  base, chunked = groups[0].rows[1], groups[0].rows[2]
  assert chunked.speedup == stats.Speedup(2.1, 2.0, 2.2, "min-max")
  assert (chunked.runs, len(chunked.summaries), chunked.degree, chunked.sequence) == (2, 1, 8, 75600)
  assert chunked.aot_gain == pytest.approx(1.25) and base.aot_gain == 1.0
  assert base.exposed_s == pytest.approx(0.6) and base.overlap == pytest.approx(0.05)
  assert groups[1].rows[1].aot.predicted_step_s == 0.6 and groups[1].rows[1].step is None


def test_markdown_rows_and_failures():
  text = report.markdown("tp", table.build(RECORDS), RECORDS)
  assert "## train · v5p16 resolution=720p" in text
  assert ("| ulysses | 1 | 8 | 75600 | 2100 (1800–2420) | 1 (baseline) | 600 | 0.05 "
          "| 1500 | 1 | 0 | 2/2 |") in text
  assert ("| ulysses | 2 | 8 | 75600 | 1000 (900–1100) | 2.100× [2.000–2.200, min-max] | 100 "
          "| 0.8 | 1200 | 1.25 | 0.75 | 1/2 |") in text
  assert "- `tp-c2-r1`: ValueError: boom" in text


def test_write_report_png_and_tensorboard_image(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
  path = report.write_report(tmp_path)
  assert path == tmp_path / "report.md" and "2.100×" in path.read_text()
  assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
  acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
  acc.Reload()
  assert acc.Tags()["images"] == ["report/step_time_and_speedup"]


def test_report_cli_errors_on_missing_results(tmp_path, capsys):
  assert report.main([str(tmp_path)]) == 2
  assert capsys.readouterr().err == (
      f"error: {tmp_path}: no results.jsonl (run python -m launch first)\n")


def _runs(medians, spread, steps=20, seed=0):
  """Per-repeat step times: each repeat's steps spread +-spread around its median."""
  rng = np.random.default_rng(seed)
  return [list(m * (1 + rng.uniform(-spread, spread, steps))) for m in medians]


@pytest.mark.parametrize("base,cand,expected", [
    # Clear win: chunked 20 % faster in every repeat, steps within +-2 %.
    (_runs([1.0, 1.01, 0.99], 0.02), _runs([0.8, 0.81, 0.79], 0.02, seed=1), "faster"),
    # Clear loss: chunked 20 % slower.
    (_runs([1.0, 1.01, 0.99], 0.02), _runs([1.2, 1.21, 1.19], 0.02, seed=1), "slower"),
    # Overlap: 2 % apart on average but repeats scatter by +-10 %: the interval crosses 1.
    (_runs([1.0, 1.1, 0.9], 0.05), _runs([0.98, 1.08, 0.88], 0.05, seed=1),
     "no clear difference"),
])
def test_verdict_on_synthetic_results(base, cand, expected):
  got = stats.bootstrap(base, cand)
  assert stats.verdict(got) == expected
  crosses = got.low <= 1.0 <= got.high
  assert crosses == (expected == "no clear difference")


def test_verdict_edges():
  assert stats.verdict(stats.Speedup(1.1, 1.0, 1.2, "min-max")) == "no clear difference"
  assert stats.verdict(stats.Speedup(1.1, 1.0001, 1.2, "min-max")) == "faster"
  assert stats.verdict(stats.Speedup(0.9, 0.8, 0.9999, "min-max")) == "slower"
  assert stats.verdict(None) is None


def test_report_states_steps_repeats_verdict_and_cpu(tmp_path):
  def record(run, chunks, steps):
    summary = {"status": "ok", "attention": {"variant": "ulysses", "num_chunks": chunks},
               "mesh": {"context": 4}, "devices": {"platform": "cpu"},
               "step_times_s": steps, "step_time_s": {"median": steps[0], "n": len(steps)}}
    return {"run": run, "status": "ok", "mode": "train", "hardware": "local",
            "point": {"attention.num_chunks": chunks}, "summary": summary}
  base, fast, same = _runs([1.0, 1.0], 0.02), _runs([0.8, 0.8], 0.02, seed=1), _runs(
      [1.1, 0.9], 0.02, seed=2)
  records = [record("q-c1-r0", 1, base[0]), record("q-c1-r1", 1, base[1]),
             record("q-c2-r0", 2, fast[0]), record("q-c2-r1", 2, fast[1]),
             record("q-c4-r0", 4, same[0]), record("q-c4-r1", 4, same[1])]
  (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  text = report.write_report(tmp_path).read_text()
  assert report.CPU_NOTE in text and "timed steps × repeats | verdict |" in text
  assert "| 2/2 | 20 × 2 | faster |" in text and "| 2/2 | 20 × 2 | no clear difference |" in text
  lines = report.result_lines(report.load(tmp_path)[1])
  assert len(lines) == 2 and lines[0].startswith("train · local · chunks=2: 1.2")
  assert lines[0].endswith("-> faster (20 timed steps × 2 repeats; CPU: mechanics overhead, "
                           "not TPU overlap)")
  assert "-> no clear difference (20 timed steps × 2 repeats" in lines[1]
  saved = json.loads((tmp_path / "report.json").read_text())
  assert saved["groups"][0]["note"] == report.CPU_NOTE
  assert [r["verdict"] for r in saved["groups"][0]["rows"]] == [None, "faster",
                                                                "no clear difference"]
  assert saved["groups"][0]["rows"][1]["speedup"]["level"] == 0.95


def test_figure_is_one_column_with_verdicts_and_cpu_note(tmp_path):
  from launch import plot
  test_report_states_steps_repeats_verdict_and_cpu(tmp_path)
  fig = plot.figure(report.load(tmp_path)[1], title="q")
  width, height = fig.get_size_inches() * plot.DPI
  assert len(fig.axes) == 2 and width <= 800 and height > width  # stacked, legible when scaled
  texts = [t.get_text() for t in fig.axes[1].texts]
  assert texts == ["faster\n20 steps × 2 repeats", "no clear difference\n20 steps × 2 repeats"]
  assert plot.CPU_NOTE in fig._suptitle.get_text()  # pylint: disable=protected-access
