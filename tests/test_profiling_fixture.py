"""The TPU-shaped XSpace fixture (tests/fixtures/tpu_capture) parsed to exact numbers."""
import os

import pytest

from harness.profiling import analyze, format_table

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "tpu_capture")
US = 1e-6


@pytest.fixture(scope="module")
def result():
  return analyze(FIXTURE)


def test_steps_devices_and_module(result):
  assert result["platform"] == "tpu"
  assert result["module"] == "jit_train_step"
  assert (result["steps"], result["devices"], result["step_markers"]) == (2, 2, 2)
  assert [r["step"] for r in result["per_step"]] == [10, 11]
  # The data-generation program runs every step but is not the step.
  assert result["modules"]["jit_generate_batch"] == {"executions": 2,
                                                     "time_s": pytest.approx(10 * US)}


def test_exact_times_averaged_over_devices(result):
  # TPU:0 — collectives cover [10, 85) us: 75; compute 10+28+24+5 = 67; exposed 75-28-24 = 23.
  # TPU:1 — the chunk's compute is 10 us shorter: compute 57, exposed 33.
  expected = {"collective_s": 75 * US, "compute_s": 62 * US, "exposed_collective_s": 28 * US,
              "attention_s": 33 * US, "wall_s": 90 * US}
  for row in [result] + result["per_step"]:
    for key, value in expected.items():
      assert row[key] == pytest.approx(value, rel=1e-9), key
    assert row["overlap_fraction"] == pytest.approx(1 - 28 / 75, rel=1e-9)
    assert row["attention_share"] == pytest.approx(33 / 62, rel=1e-9)


def test_async_pairs_count_once_and_span_start_to_done(result):
  assert result["collectives"] == {
      "all-reduce": {"count": 1, "time_s": pytest.approx(30 * US, rel=1e-9)},
      "all-to-all": {"count": 2, "time_s": pytest.approx(45 * US, rel=1e-9)},
  }


def test_chunk_breakdown_shows_chunk0_all_to_all_under_chunk1_attention(result):
  # Chunk 0's async all-to-all spans [10, 45) us; chunk 1's fusion.2 runs inside it for
  # 28 us (TPU:0) or 18 us (TPU:1), leaving 7 or 17 us exposed.
  assert result["chunks"] == {
      "0": {"collective_s": pytest.approx(35 * US, rel=1e-9),
            "exposed_collective_s": pytest.approx(12 * US, rel=1e-9), "compute_s": 0},
      "1": {"collective_s": 0, "exposed_collective_s": 0,
            "compute_s": pytest.approx(23 * US, rel=1e-9)},
  }


def test_a_single_file_reads_the_hlo_text_beside_it(result):
  alone = analyze(os.path.join(FIXTURE, "host0.xplane.pb"))
  assert alone["attention_share"] == result["attention_share"]
  assert alone["exposed_collective_s"] == result["exposed_collective_s"]


def test_without_hlo_text_attention_falls_back_to_op_names():
  # No op of the fixture is named after attention; only its scopes say so.
  by_name = analyze(FIXTURE, hlo_text="")
  assert by_name["attention_rule"] == "op names"
  assert by_name["attention_share"] == 0


def test_table_lists_steps_and_kinds(result):
  table = format_table(result)
  assert "tpu, module jit_train_step, 2 step(s) x 2 device(s)" in table
  assert "0.627" in table and "all-to-all" in table and "all-reduce" in table
  legend = "\n".join(table.splitlines()[1:3])
  for column in ("wall:", "collective:", "compute:", "exposed:", "overlap:", "attn share:"):
    assert column in legend  # every column is explained above the table
