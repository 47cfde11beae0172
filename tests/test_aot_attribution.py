"""Attribution by kind, layout bytes and cost bounds on a hand-written schedule, with hand arithmetic."""
import pytest

from harness.aot import calibration
from harness.aot import report as report_lib
from harness.aot.analysis import analyze_hlo
from harness.aot.attribution import OpKinds
from harness.aot.hardware import ChipSpec
from harness.aot.hlo_parse import parse_module

# 1 GHz clock (1000 cycles = 1 us), 1e12 FLOP/s peak, HBM 1e10 B/s (10,000 B = 1 us), 1 GB/s links.
HW = ChipSpec("test", peak_bf16_flops=1e12, clock_hz=1e9, hbm_bytes=1e9, hbm_bandwidth=1e10,
              ici_bandwidth=1e9, ici_ports=1, devices_per_chip=1, wraparound_multiple=4,
              collective_latency_s=0.0)
TWO_CHIPS = [(0, 0), (1, 0)]

MODULE = """HloModule attr, is_scheduled=true, num_partitions=2

%mm (ma: bf16[100,128], mb: bf16[128,128]) -> bf16[100,128] {
  %ma = bf16[100,128]{1,0} parameter(0)
  %mb = bf16[128,128]{1,0} parameter(1)
  ROOT %conv = bf16[100,128]{1,0} convolution(%ma, %mb), dim_labels=bf_io->bf
}

%ew (ep: bf16[100,128]) -> bf16[100,128] {
  %ep = bf16[100,128]{1,0} parameter(0)
  ROOT %em = bf16[100,128]{1,0} multiply(%ep, %ep)
}

%dus (buf: bf16[40000], upd: bf16[5000], i: s32[]) -> bf16[40000] {
  %buf = bf16[40000]{0} parameter(0)
  %upd = bf16[5000]{0} parameter(1)
  %i = s32[] parameter(2)
  ROOT %d = bf16[40000]{0} dynamic-update-slice(%buf, %upd, %i)
}

%ds (big: bf16[8000], j: s32[]) -> bf16[1000] {
  %big = bf16[8000]{0} parameter(0)
  %j = s32[] parameter(1)
  ROOT %s = bf16[1000]{0} dynamic-slice(%big, %j), dynamic_slice_sizes={1000}
}

ENTRY %main (x: bf16[10000], buf: bf16[40000], upd: bf16[5000], i: s32[], q: bf16[1,256,128], w: bf16[128,128]) -> bf16[100,128] {
  %x = bf16[10000]{0} parameter(0)
  %buf = bf16[40000]{0} parameter(1)
  %upd = bf16[5000]{0} parameter(2)
  %i = s32[] parameter(3)
  %q = bf16[1,256,128]{2,1,0} parameter(4)
  %w = bf16[128,128]{1,0} parameter(5)
  %cp = bf16[10000]{0:T(2,128)} copy(%x), backend_config={"estimated_cycles":"5000"}
  %up = bf16[40000]{0} fusion(%buf, %upd, %i), kind=kLoop, calls=%dus, backend_config={"estimated_cycles":"100"}
  %a2a-start = ((bf16[1,256,128]{2,1,0}), bf16[1,256,128]{2,1,0}) all-to-all-start(%q), replica_groups={{0,1}}, dimensions={1}
  %q2 = bf16[100,128]{1,0} bitcast(%q)
  %proj = bf16[100,128]{1,0} fusion(%q2, %w), kind=kOutput, calls=%mm, backend_config={"estimated_cycles":"3000"}
  %att = bf16[1,256,128]{2,1,0} custom-call(%q, %q, %q), custom_call_target="tpu_custom_call", metadata={op_name="jit(f)/splash_mha_fwd/pallas_call"}
  %a2a-done = bf16[1,256,128]{2,1,0} all-to-all-done(%a2a-start)
  ROOT %out = bf16[100,128]{1,0} fusion(%proj), kind=kLoop, calls=%ew, backend_config={"estimated_cycles":"2000"}
}
"""

US = 1e-6
# splash forward: 4 * (256 * 128) * 256 FLOPs at 1e12 FLOP/s = 33.55 us (memory: 4 x 65,536 B at
# 1e10 B/s = 26.21 us, shorter). The all-to-all: 65,536 B over 2 chips: half of it crosses = 32.77 us.
ATT, A2A, ATT_BYTES_S = 4 * 256 * 128 * 256 / 1e12, 32_768 / 1e9, 4 * 65_536 / 1e10
COPY_EST, COPY_ROOF = 5 * US, 40_000 / 1e10       # copy: 20,000 B read + 20,000 B written
DUS_EST, DUS_ROOF = 0.1 * US, 20_004 / 1e10       # in place: update read + written, index read


def test_kinds_and_moved_bytes():
  module = parse_module(MODULE)
  kinds = OpKinds(module)
  main = module.computations["main"]
  assert {n: kinds.kind(main.by_name[n]) for n in ("cp", "up", "proj", "att", "out")} == {
      "cp": "layout", "up": "layout", "proj": "matmul", "att": "attention", "out": "other"}
  assert kinds.moved_bytes(main.by_name["cp"], main) == 40_000
  assert kinds.moved_bytes(main.by_name["up"], main) == 20_004
  # A dynamic-slice reads its slice (2,000 B), not its 16,000 B operand; the index is read whole.
  assert kinds._fusion_bytes("ds") == 2_000 + 4 + 2_000


def test_attribution_equals_hand_arithmetic():
  r = analyze_hlo(MODULE, HW, TWO_CHIPS, (2, 1))
  assert r["compute_by_kind_s"] == pytest.approx(
      {"attention": ATT, "matmul": 3 * US, "layout": COPY_EST + DUS_EST, "other": 2 * US})
  assert sum(r["compute_by_kind_s"].values()) == pytest.approx(r["compute_s"])
  assert r["layout_bytes"] == 60_004
  assert r["comm_by_kind_s"] == pytest.approx({"all-to-all": A2A})
  # The transfer starts after cp and up; 3 us of matmul then 29.77 us of attention run under it.
  (rec,) = r["async_collectives"]
  assert rec["compute_between_by_kind_s"] == pytest.approx({"attention": ATT, "matmul": 3 * US})
  assert rec["hidden_by_kind_s"] == pytest.approx({"attention": A2A - 3 * US, "matmul": 3 * US})
  assert r["hidden_under_attention_s"] == pytest.approx(A2A - 3 * US)
  assert r["all_to_all_hidden_by_kind_s"] == pytest.approx(
      {"attention": A2A - 3 * US, "matmul": 3 * US, "layout": 0.0, "other": 0.0})
  assert r["hidden_under_attention_fraction"] == pytest.approx((A2A - 3 * US) / A2A)
  assert r["predicted_step_s"] == pytest.approx(COPY_EST + DUS_EST + 3 * US + ATT + 2 * US)


def test_bounds_equal_hand_arithmetic():
  r = analyze_hlo(MODULE, HW, TWO_CHIPS, (2, 1))
  attention = calibration.attention_range("test")
  lo = min(COPY_EST, COPY_ROOF) + min(DUS_EST, DUS_ROOF) + 3 * US + ATT / attention.hi + 2 * US
  hi = max(COPY_EST, COPY_ROOF) + max(DUS_EST, DUS_ROOF) + 3 * US + ATT / attention.lo + 2 * US
  assert r["predicted_step_s_bounds"] == pytest.approx([lo, hi])
  assert r["predicted_step_s_bounds"][0] <= r["predicted_step_s"] <= r["predicted_step_s_bounds"][1]
  assert len(r["bound_scenarios"]) == 8
  assert set(r["bound_sources"]) == {"layout", "attention_efficiency", "ici_efficiency"}


def test_slow_links_expose_communication_in_the_high_corner():
  # A kernel that is not attention is priced by its bytes (26.21 us, kind other); at half link speed
  # the 65.5 us transfer outlasts the 3 us + 26.21 us under it.
  small = MODULE.replace("splash_mha_fwd", "not_a_kernel")
  r = analyze_hlo(small, HW, TWO_CHIPS, (2, 1))
  high = next(s for s in r["bound_scenarios"]
              if (s["layout"], s["attention"], s["ici"]) == ("hi", "hi", "hi"))
  ici = calibration.ICI_EFFICIENCY.lo
  under = 3 * US + ATT_BYTES_S
  assert high["exposed_comm_s"] == pytest.approx(A2A / ici - under)
  assert r["hidden_under_attention_s"] == 0.0


def test_synchronous_all_to_all_hides_nothing_under_attention():
  sync = (MODULE.replace("%a2a-start = ((bf16[1,256,128]{2,1,0}), bf16[1,256,128]{2,1,0}) "
                         "all-to-all-start(%q)", "%a2a = bf16[1,256,128]{2,1,0} all-to-all(%q)")
          .replace("  %a2a-done = bf16[1,256,128]{2,1,0} all-to-all-done(%a2a-start)\n", ""))
  r = analyze_hlo(sync, HW, TWO_CHIPS, (2, 1))
  assert r["collectives"]["all-to-all"]["async_count"] == 0
  assert r["hidden_under_attention_s"] == 0.0
  assert r["exposed_comm_s"] == pytest.approx(A2A)


def test_calibrated_step_prices_attention_at_the_fitted_efficiency(monkeypatch):
  assert analyze_hlo(MODULE, HW, TWO_CHIPS, (2, 1))["predicted_step_s_calibrated"] is None
  monkeypatch.setitem(calibration.FITTED_ATTENTION_EFFICIENCY, "test",
                      calibration.Fitted(0.25, "hand"))
  r = analyze_hlo(MODULE, HW, TWO_CHIPS, (2, 1))
  # Only the attention kernel slows down (4x); layouts stay at XLA's estimates.
  assert r["predicted_step_s_calibrated"] == pytest.approx(
      COPY_EST + DUS_EST + 3 * US + 4 * ATT + 2 * US)
  assert r["calibration"] == {"attention_efficiency": {"value": 0.25, "source": "hand"}}
  assert "calibrated step" in report_lib.format_table(
      dict(r, topology={"name": "t", "num_devices": 2}, step="eval"))


@pytest.mark.parametrize("generation", sorted(calibration.FITTED_ATTENTION_EFFICIENCY))
def test_fitted_efficiency_lies_in_its_calibrated_range(generation):
  fitted = calibration.fitted_attention_efficiency(generation).value
  assert calibration.attention_range(generation).lo <= fitted <= 1.0
