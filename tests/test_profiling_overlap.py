"""Exposed-collective arithmetic on hand-built timelines, with exact expected numbers."""
import pytest

from harness.profiling import intervals as overlap
from harness.profiling import analyze_trace, collective_kind, collective_spans
from harness.profiling.xspace import OpEvent, StepMarker, Trace


def test_union_merges_touching_and_nested_intervals():
  assert overlap.union([(5, 7), (0, 2), (1, 3), (3, 4), (8, 8), (5, 6)]) == [(0, 4), (5, 7)]


def test_subtract_cuts_holes():
  assert overlap.subtract([(0, 10), (20, 30)], [(2, 4), (8, 22), (25, 26)]) == [
      (0, 2), (4, 8), (22, 25), (26, 30)]


@pytest.mark.parametrize("collective, compute, expected_exposed", [
    pytest.param([(10, 20)], [(0, 30)], 0, id="full-overlap"),
    pytest.param([(10, 20)], [(0, 10), (20, 30)], 10, id="none"),
    pytest.param([(10, 20)], [(0, 14)], 6, id="partial"),
    pytest.param([(10, 40), (15, 20)], [(12, 14), (18, 25), (30, 32)], 19, id="nested"),
])
def test_exposed_collective_time(collective, compute, expected_exposed):
  b = overlap.breakdown(collective, compute)
  assert b.exposed_collective == expected_exposed
  assert b.overlap_fraction == 1 - expected_exposed / overlap.measure(collective)


def test_breakdown_without_collectives_has_no_overlap_fraction():
  b = overlap.breakdown([], [(0, 5)], [(1, 2)])
  assert (b.collective, b.compute, b.attention, b.wall) == (0, 5, 1, 5)
  assert b.overlap_fraction is None


@pytest.mark.parametrize("name, expected", [
    ("all-to-all.3", ("all-to-all", "")),
    ("all-to-all-start.1", ("all-to-all", "-start")),
    ("%all-gather-done.2 = f32[8] all-gather-done(%x)", ("all-gather", "-done")),
    ("collective-permute-start", ("collective-permute", "-start")),
    ("reduce-scatter.7", ("reduce-scatter", "")),
    ("all-reduce-done.4", ("all-reduce", "-done")),
    ("fusion.12", (None, "")),
    ("dot_general", (None, "")),
])
def test_collective_kind(name, expected):
  assert collective_kind(name) == expected


def _op(device, name, start, end, run=1):
  return OpEvent(device, name, "jit_step", ("jit_step", run), start * 1e3, end * 1e3)


def test_several_devices_are_analysed_separately_then_averaged():
  # Device a hides its all-to-all completely; device b not at all. One device's compute
  # must never hide another device's collective.
  ops = [
      _op("a", "all-to-all-start.1", 0, 2), _op("a", "fusion.1", 2, 10),
      _op("a", "all-to-all-done.1", 10, 12),
      _op("b", "fusion.1", 0, 8), _op("b", "all-to-all.1", 8, 20),
  ]
  result = analyze_trace(Trace("tpu", ops, []))
  assert result["steps"] == 1 and result["devices"] == 2
  # a: collective 12 us (0-12), exposed 4; b: collective 12, exposed 12.
  assert result["collective_s"] == pytest.approx(12e-6, abs=1e-15)
  assert result["compute_s"] == pytest.approx(8e-6, abs=1e-15)
  assert result["exposed_collective_s"] == pytest.approx(8e-6, abs=1e-15)
  assert result["overlap_fraction"] == pytest.approx(1 / 3, abs=1e-12)
  assert result["collectives"] == {"all-to-all": {"count": 1, "time_s": pytest.approx(12e-6)}}


def test_steps_are_executions_of_the_busiest_module_and_take_marker_numbers():
  ops = [_op("a", "fusion.1", 0, 10, run=1), _op("a", "all-to-all.1", 10, 14, run=1),
         _op("a", "fusion.1", 20, 30, run=2), _op("a", "all-to-all.1", 30, 40, run=2),
         OpEvent("a", "fusion.9", "jit_data", ("jit_data", 5), 15e3, 16e3)]
  markers = [StepMarker(7, 0, 15e3), StepMarker(8, 19e3, 41e3)]
  result = analyze_trace(Trace("cpu", ops, markers))
  assert result["module"] == "jit_step" and result["steps"] == 2
  assert [r["step"] for r in result["per_step"]] == [7, 8]
  assert [r["exposed_collective_s"] for r in result["per_step"]] == pytest.approx([4e-6, 10e-6])
  assert result["exposed_collective_s"] == pytest.approx(7e-6)
  assert result["modules"]["jit_data"] == {"executions": 1, "time_s": pytest.approx(1e-6)}


def test_attention_share_from_hlo_scopes_and_from_op_names():
  ops = [_op("a", "fusion.1", 0, 3), _op("a", "splash_attention_fwd", 3, 4),
         _op("a", "fusion.2", 4, 8)]
  by_name = analyze_trace(Trace("tpu", ops, []))
  assert by_name["attention_share"] == pytest.approx(1 / 8)
  scopes = {"fusion.1": "jit(step)/block_0/attention/dot_general",
            "fusion.2": "jit(step)/block_0/ring_attention/exp",
            "splash_attention_fwd": "jit(step)/block_0/mlp/scattering"}
  by_scope = analyze_trace(Trace("tpu", ops, []), scopes)
  assert by_scope["attention_share"] == pytest.approx(7 / 8)
  assert by_scope["attention_rule"] == "hlo op_name scopes"


def test_async_pairs_match_by_name_even_when_interleaved():
  # TPU numbering as in a scheduled chunked Ulysses step: the unnumbered pair is a pair too.
  ops = [_op("a", "all-to-all-start.1", 0, 1), _op("a", "all-to-all-start", 1, 2),
         _op("a", "all-to-all-done", 10, 11),
         _op("a", "all-to-all-done.1", 20, 30), _op("a", "all-gather-done.4", 30, 31),
         _op("a", "all-gather-start.4", 40, 41)]
  assert collective_spans(ops) == [
      ("all-to-all", 1e3, 11e3, "all-to-all-start"),
      ("all-to-all", 0, 30e3, "all-to-all-start.1"),
      ("all-gather", 30e3, 31e3, "all-gather-done.4"),  # a done without a start counts alone
      ("all-gather", 40e3, 41e3, "all-gather-start.4")]  # as does a start the capture cut off


def test_executions_dispatched_outside_the_step_annotations_are_left_out():
  # The loop dispatches step k+1 before it waits for step k, so the capture that opens at
  # step 2 also sees step 1's execution; only run_ids dispatched inside a marker count.
  def run(run_id, start):
    return [OpEvent("a", "fusion.1", "jit_step", ("jit_step", run_id), start, start + 6, run_id),
            OpEvent("a", "all-to-all.1", "jit_step", ("jit_step", run_id), start + 6,
                    start + 10, run_id)]
  markers = [StepMarker(2, 0, 1, frozenset({12})), StepMarker(3, 20, 21, frozenset({13}))]
  result = analyze_trace(Trace("cpu", run(11, 2) + run(12, 12) + run(13, 30), markers))
  assert [r["step"] for r in result["per_step"]] == [2, 3]
  assert (result["steps"], result["left_out_executions"]) == (2, 1)
