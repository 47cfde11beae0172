"""Parser, cost model and schedule simulation on small hand-written HLO, with exact numbers."""
import pytest

from harness.aot import costs
from harness.aot.analysis import analyze_hlo
from harness.aot.hardware import HARDWARE, ChipSpec
from harness.aot.hlo_parse import parse_instruction, parse_module, shape_bytes

# 1 GHz clock (1000 cycles = 1 us), 1 GB/s links, free memory traffic, no fixed latency.
HW = ChipSpec("test", peak_bf16_flops=1e12, clock_hz=1e9, hbm_bytes=1e9, hbm_bandwidth=1e18,
              ici_bandwidth=1e9, ici_ports=1, devices_per_chip=1, wraparound_multiple=4,
              collective_latency_s=0.0)
TWO_CHIPS = [(0, 0), (1, 0)]

MODULE = """HloModule test, is_scheduled=true, num_partitions=2

%fc (p0: bf16[1000]) -> bf16[1000] {
  %p0 = bf16[1000]{0} parameter(0)
  ROOT %neg = bf16[1000]{0} negate(%p0)
}

%body (bp: (s32[], bf16[4000])) -> (s32[], bf16[4000]) {
  %bp = (s32[], bf16[4000]{0}) parameter(0)
  %i = s32[] get-tuple-element(%bp), index=0
  %x = bf16[4000]{0} get-tuple-element(%bp), index=1
  %a2a-start.1 = ((bf16[4000]{0}), bf16[4000]{0}, u32[], u32[]) all-to-all-start(%x), channel_id=2, replica_groups={{0,1}}, dimensions={0}
  %work = bf16[4000]{0} fusion(%x), kind=kLoop, calls=%fc, metadata={op_name="jit(f)/body/dot_general"}, backend_config={"estimated_cycles":"1000"}
  %a2a-done.1 = bf16[4000]{0} all-to-all-done(%a2a-start.1)
  ROOT %t = (s32[], bf16[4000]{0}) tuple(%i, %a2a-done.1)
}

%cond (cp: (s32[], bf16[4000])) -> pred[] {
  %cp = (s32[], bf16[4000]{0}) parameter(0)
  %ci = s32[] get-tuple-element(%cp), index=0
  %n = s32[] constant(3)
  ROOT %lt = pred[] compare(%ci, %n), direction=LT, backend_config={"estimated_cycles":"0"}
}

ENTRY %main (a: bf16[1000], b: f32[1000], c: (s32[], bf16[4000])) -> bf16[1000] {
  %a = bf16[1000]{0} parameter(0)
  %b = f32[1000]{0} parameter(1)
  %c = (s32[], bf16[4000]{0}) parameter(2)
  %pre = bf16[1000]{0} fusion(%a), kind=kLoop, calls=%fc, backend_config={"estimated_cycles":"2000"}
  %a2a-start = ((bf16[1000]{0}), bf16[1000]{0}, u32[], u32[]) all-to-all-start(%pre), channel_id=1, replica_groups={{0,1}}, dimensions={0}
  %mid = bf16[1000]{0} fusion(%a), kind=kLoop, calls=%fc, metadata={op_name="jit(f)/attn/dot_general"}, backend_config={"estimated_cycles":"3000"}
  %a2a-done = bf16[1000]{0} all-to-all-done(%a2a-start)
  %sync = f32[1000]{0} all-to-all(%b), channel_id=3, replica_groups=[1,2]<=[2], dimensions={0}
  %loop = (s32[], bf16[4000]{0}) while(%c), condition=%cond, body=%body
  ROOT %out = bf16[1000]{0} add(%a2a-done, %mid), backend_config={"estimated_cycles":"0"}
}
"""


def test_parse_module_structure():
  module = parse_module(MODULE)
  assert module.entry == "main"
  assert module.num_partitions == 2
  assert sorted(module.computations) == ["body", "cond", "fc", "main"]
  main = module.computations["main"]
  assert [i.opcode for i in main.instructions][3:7] == [
      "fusion", "all-to-all-start", "fusion", "all-to-all-done"]
  loop = main.by_name["loop"]
  assert (loop.attr_computation("body"), loop.attr_computation("condition")) == ("body", "cond")
  assert main.by_name["pre"].estimated_cycles == 2000
  assert main.by_name["mid"].op_name == "jit(f)/attn/dot_general"
  assert main.root.name == "out"


def test_parse_multiline_instruction_and_tuple_shape():
  text = ('%k = (f32[128,128]{1,0}, bf16[4,1024,128]{2,1,0}) custom-call(%q, %kk), '
          'custom_call_target="tpu_custom_call", frontend_attributes={kernel_metadata={\n'
          '"xprof_metadata":"{\\"block_q\\": 128}"\n}}, metadata={op_name="splash_mha_fwd"}')
  instr = parse_instruction(text)
  assert (instr.name, instr.opcode, instr.operands) == ("k", "custom-call", ("q", "kk"))
  assert instr.custom_call_target == "tpu_custom_call"
  assert instr.op_name == "splash_mha_fwd"
  assert instr.bytes == 128 * 128 * 4 + 4 * 1024 * 128 * 2
  assert shape_bytes("(bf16[2,3]{1,0}, u32[]{:S(2)}, pred[4])") == 12 + 4 + 4


def test_replica_groups_iota_and_list():
  iota = parse_instruction("%x = f32[8]{0} all-gather(%y), replica_groups=[2,4]<=[4,2]T(1,0)")
  assert iota.replica_groups(8) == [[0, 2, 4, 6], [1, 3, 5, 7]]
  plain = parse_instruction("%x = f32[8]{0} all-reduce(%y), replica_groups=[2,4]<=[8]")
  assert plain.replica_groups(8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
  listed = parse_instruction("%x = f32[8]{0} all-reduce(%y), replica_groups={{0,2},{1,3}}")
  assert listed.replica_groups(4) == [[0, 2], [1, 3]]
  empty = parse_instruction("%x = f32[8]{0} all-reduce(%y), replica_groups={}")
  assert empty.replica_groups(4) == [[0, 1, 2, 3]]


def test_simulation_exact_numbers():
  # Entry: pre 2us; a2a (2000 B -> 1 us) under mid 3us; sync a2a (4000 B -> 2 us); then 3 loop trips
  # of a2a (8000 B -> 4 us) with 1 us of work under it -> 3 us stall a trip.
  r = analyze_hlo(MODULE, HW, TWO_CHIPS, (2, 1))
  assert r["predicted_step_s"] == pytest.approx(19e-6)
  assert r["compute_s"] == pytest.approx(8e-6)
  assert r["comm_s"] == pytest.approx(15e-6)
  assert r["exposed_comm_s"] == pytest.approx(11e-6)
  assert r["hidden_comm_s"] == pytest.approx(4e-6)
  assert r["hidden_fraction"] == pytest.approx(0.5)
  assert r["collectives"] == {"all-to-all": {"count": 3, "async_count": 2, "executed": 5}}
  assert r["unknown_trip_counts"] == 0
  by_name = {a["name"]: a for a in r["async_collectives"]}
  entry, body = by_name["a2a-start"], by_name["a2a-start.1"]
  assert (entry["bytes"], entry["group_size"], entry["times"]) == (2000, 2, 1)
  assert entry["compute_between_s"] == pytest.approx(3e-6)
  assert (entry["exposed_s"], entry["hidden_s"]) == (0.0, pytest.approx(1e-6))
  assert [o["op_name"] for o in entry["ops_between"]] == ["jit(f)/attn/dot_general"]
  assert body["times"] == 3
  assert body["compute_between_s"] == pytest.approx(1e-6)
  assert body["exposed_s"] == pytest.approx(3e-6)
  assert body["hidden_s"] == pytest.approx(1e-6)


def test_known_trip_count_wins_over_condition():
  text = MODULE.replace("body=%body", 'body=%body, backend_config={"known_trip_count":{"n":"5"}}')
  r = analyze_hlo(text, HW, TWO_CHIPS, (2, 1))
  assert r["predicted_step_s"] == pytest.approx((7 + 5 * 4) * 1e-6)
  assert r["collectives"]["all-to-all"]["executed"] == 7


def test_collective_model_exact():
  # v5p link: 4800 Gbps / 8 / 6 ports = 100 GB/s a direction; 2 us fixed latency.
  v5p = HARDWARE["v5p"]
  cube = [(x, y, z) for z in range(2) for y in range(2) for x in range(2)]
  mib = 2 ** 20
  # 2x2x2, no wrap: bisection cut of 4 links carries 8*B/4 -> B / (2 * 100 GB/s).
  assert costs.collective_seconds("all-to-all", mib, cube, (2, 2, 2), (False,) * 3, v5p) == (
      pytest.approx(2e-6 + mib / 2 / 100e9))
  # A 4-chip line: injection (3/4 B over 2 links) vs bisection (B over 1 link).
  line = [(x, 0, 0) for x in range(4)]
  assert costs.collective_seconds("all-to-all", mib, line, (4, 1, 1), (False,) * 3, v5p) == (
      pytest.approx(2e-6 + mib / 100e9))
  assert costs.collective_seconds("all-gather", mib, cube, (2, 2, 2), (False,) * 3, v5p) == (
      pytest.approx(2e-6 + 7 * mib / (3 * 100e9)))
  assert costs.collective_seconds("all-reduce", mib, cube, (2, 2, 2), (False,) * 3, v5p) == (
      pytest.approx(2e-6 + 2 * 7 / 8 * mib / (3 * 100e9)))
  assert costs.collective_seconds("collective-permute", mib, cube[:2], (2, 2, 2), (False,) * 3,
                                  v5p) == pytest.approx(2e-6 + mib / 100e9)
  assert costs.collective_seconds("all-to-all", mib, cube[:1], (2, 2, 2), (False,) * 3, v5p) == 0.0


def test_splash_custom_call_flops():
  text = """HloModule m, is_scheduled=true

ENTRY %main (m: s8[1,8,16], q: bf16[4,1024,128], k: bf16[4,2048,128]) -> bf16[4,1024,128] {
  %m = s8[1,8,16]{2,1,0} parameter(0)
  %q = bf16[4,1024,128]{2,1,0} parameter(1)
  %k = bf16[4,2048,128]{2,1,0} parameter(2)
  ROOT %fwd = bf16[4,1024,128]{2,1,0} custom-call(%m, %q, %k, %k), custom_call_target="tpu_custom_call", metadata={op_name="jit(f)/splash_mha_fwd/pallas_call"}
}
"""
  r = analyze_hlo(text, HW, TWO_CHIPS, (2, 1))
  flops = 4 * (4 * 1024 * 128) * 2048
  assert r["compute_s"] == pytest.approx(flops / 1e12)
  assert r["cost_sources"] == {"flops": 1, "free": 3}
  dq = text.replace("splash_mha_fwd", "splash_mha_dq")
  assert analyze_hlo(dq, HW, TWO_CHIPS, (2, 1))["compute_s"] == pytest.approx(1.5 * flops / 1e12)
  one_head = text.replace("bf16[4,1024,128]", "bf16[1024,128]").replace("bf16[4,2048,128]",
                                                                        "bf16[2048,128]")
  assert analyze_hlo(one_head, HW, TWO_CHIPS, (2, 1))["compute_s"] == pytest.approx(flops / 4e12)


ASYNC_WRAPPER = """HloModule w, is_scheduled=true, num_partitions=2

%neg (np: f32[500]) -> f32[500] {
  %np = f32[500]{0} parameter(0)
  ROOT %n = f32[500]{0} negate(%np)
}

%rs (p: f32[2000]) -> f32[1000] {
  %p = f32[2000]{0} parameter(0)
  ROOT %r = f32[1000]{0} reduce-scatter(%p), replica_groups={{0,1}}, dimensions={0}, to_apply=%sum
}

ENTRY %main (a: f32[2000], b: f32[500]) -> f32[1000] {
  %a = f32[2000]{0} parameter(0)
  %b = f32[500]{0} parameter(1)
  %s = ((f32[2000]{0}), f32[1000]{0}) async-start(%a), calls=%rs
  %u = ((f32[2000]{0}), f32[1000]{0}) async-update(%s)
  %ag = (f32[500]{0}, f32[1000]{0}) all-gather-start(%b), replica_groups={{0,1}}, dimensions={0}
  %w = f32[500]{0} fusion(%b), kind=kLoop, calls=%neg, backend_config={"estimated_cycles":"1000"}
  %d = f32[1000]{0} async-done(%u)
  %agd = f32[1000]{0} all-gather-done(%ag)
  ROOT %out = f32[1000]{0} add(%d, %agd), backend_config={"estimated_cycles":"0"}
}
"""


def test_async_wrapper_and_link_queue():
  # reduce-scatter of 8000 B over 2 chips: 1/2 * 8000 / 1 GB/s = 4 us; all-gather of 2000 B: 2 us,
  # queued behind it on the one link (4..6 us). 1 us of work, then the two dones wait.
  r = analyze_hlo(ASYNC_WRAPPER, HW, TWO_CHIPS, (2, 1))
  assert r["collectives"] == {"all-gather": {"count": 1, "async_count": 1, "executed": 1},
                              "reduce-scatter": {"count": 1, "async_count": 1, "executed": 1}}
  assert r["comm_s"] == pytest.approx(6e-6)
  assert r["compute_s"] == pytest.approx(1e-6)
  assert r["predicted_step_s"] == pytest.approx(6e-6)
  assert r["hidden_fraction"] == pytest.approx(1.0)
  by_kind = {a["kind"]: a for a in r["async_collectives"]}
  assert by_kind["reduce-scatter"]["exposed_s"] == pytest.approx(3e-6)
  assert by_kind["all-gather"]["exposed_s"] == pytest.approx(2e-6)
  assert by_kind["all-gather"]["hidden_s"] == 0.0


SPARSECORE_A2A = """HloModule sc, is_scheduled=true, num_partitions=2

%neg (x: bf16[1000]) -> bf16[1000] {
  %x = bf16[1000]{0} parameter(0)
  ROOT %n = bf16[1000]{0} negate(%x)
}

%offloaded (p: bf16[1000]) -> bf16[1000] {
  %p = bf16[1000]{0} parameter(0)
  ROOT %a2a = bf16[1000]{0} all-to-all(%p), channel_id=1, replica_groups={{0,1}}, dimensions={0}
}, execution_thread="sparsecore"

ENTRY %main (a: bf16[1000]) -> bf16[1000] {
  %a = bf16[1000]{0} parameter(0)
  %cs = ((bf16[1000]{0}), bf16[1000]{0}) call-start(%a), async_execution_thread="sparsecore", to_apply=%offloaded
  %w = bf16[1000]{0} fusion(%a), kind=kLoop, calls=%neg, metadata={op_name="jit(f)/attention/splash"}, backend_config={"estimated_cycles":"500"}
  %cd = bf16[1000]{0} call-done(%cs)
  ROOT %out = bf16[1000]{0} add(%cd, %w), backend_config={"estimated_cycles":"0"}
}
"""


def test_an_all_to_all_offloaded_to_sparsecore_is_an_async_all_to_all():
  # What --xla_tpu_enable_sparse_core_collective_offload_dense_all_to_all emits: the all-to-all
  # in a computation called by call-start on the SparseCore thread. 1/2 * 2000 B / 1 GB/s = 1 us
  # on the link, 0.5 us of work under it, then the done waits 0.5 us.
  r = analyze_hlo(SPARSECORE_A2A, HW, TWO_CHIPS, (2, 1))
  assert r["collectives"] == {"all-to-all": {"count": 1, "async_count": 1, "executed": 1}}
  assert r["comm_s"] == pytest.approx(1e-6)
  assert r["predicted_step_s"] == pytest.approx(1e-6)
  assert r["exposed_comm_s"] == pytest.approx(0.5e-6)

def test_libtpu_init_args_round_trip():
  from harness.aot import flags  # pylint: disable=g-import-not-at-top
  text = "--xla_tpu_enable_async_all_to_all=true --xla_tpu_scoped_vmem_limit_kib=65472"
  assert flags.libtpu_init_args(text.split()) == text
  assert flags.compiler_options(text) == {"xla_tpu_enable_async_all_to_all": "true",
                                          "xla_tpu_scoped_vmem_limit_kib": "65472"}
  assert flags.libtpu_init_args(()) == ""


COLLECTIVE_FUSION = """HloModule cf, is_scheduled=true, num_partitions=8

%ag (p: bf16[1000]) -> (bf16[1000], bf16[2000], u32[]) {
  %p = bf16[1000]{0} parameter(0)
  %g = bf16[2000]{0} all-gather(%p), replica_groups=mesh['axis_0'=2,'axis_1'=1,'axis_2'=4], device_ids=([2,2,2]T(1,0,2)) {'axis_0'}, dimensions={0}
  ROOT %cc = (bf16[1000]{0}, bf16[2000]{0}, u32[]) custom-call(%g), custom_call_target="AsyncCollectiveFusionStart"
}

%neg (np: bf16[1000]) -> bf16[1000] {
  %np = bf16[1000]{0} parameter(0)
  ROOT %n = bf16[1000]{0} negate(%np)
}

%fin (f0: bf16[1000], f1: bf16[2000]) -> bf16[2000] {
  %f0 = bf16[1000]{0} parameter(0)
  ROOT %f1 = bf16[2000]{0} parameter(1)
}

ENTRY %main (a: bf16[1000]) -> bf16[2000] {
  %a = bf16[1000]{0} parameter(0)
  %acs = (bf16[1000]{0}, bf16[2000]{0}, u32[]) fusion(%a), kind=kCustom, calls=%ag
  %work = bf16[1000]{0} fusion(%a), kind=kLoop, calls=%neg, backend_config={"estimated_cycles":"500"}
  %g0 = bf16[1000]{0} get-tuple-element(%acs), index=0
  %g1 = bf16[2000]{0} get-tuple-element(%acs), index=1
  ROOT %acd = bf16[2000]{0} fusion(%g0, %g1), kind=kLoop, calls=%fin, backend_config={"estimated_cycles":"1000"}
}
"""


def test_async_collective_fusion_with_mesh_groups():
  # The all-gather runs over 'axis_0' pairs (devices 0 and 2: chips (0,0,0) and (0,1,0)): 1 link,
  # (2-1) * 2000 B / 1 GB/s = 2 us; 0.5 us of work under it, then the done fusion waits 1.5 us and
  # does its own 1 us.
  chips = [(x, y, z) for z in range(2) for y in range(2) for x in range(2)]
  r = analyze_hlo(COLLECTIVE_FUSION, HW, chips, (2, 2, 2))
  assert r["collectives"] == {"all-gather": {"count": 1, "async_count": 1, "executed": 1}}
  (rec,) = r["async_collectives"]
  assert (rec["group_size"], rec["bytes"]) == (2, 2000)
  assert rec["comm_s"] == pytest.approx(2e-6)
  assert rec["compute_between_s"] == pytest.approx(0.5e-6)
  assert rec["exposed_s"] == pytest.approx(1.5e-6)
  assert r["predicted_step_s"] == pytest.approx(3e-6)
  assert r["compute_s"] == pytest.approx(1.5e-6)


def test_mesh_replica_groups():
  text = ("%x = f32[8]{0} all-gather(%y), replica_groups=mesh['axis_0'=2,'axis_1'=1,'axis_2'=4], "
          "device_ids=([2,2,2]T(1,0,2)) {'axis_0'}, dimensions={0}")
  assert parse_instruction(text).replica_groups(8) == [[0, 2], [1, 3], [4, 6], [5, 7]]
  text = "%x = f32[8]{0} all-reduce(%y), replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_1'}"
  assert parse_instruction(text).replica_groups(8) == [[0, 1], [2, 3], [4, 5], [6, 7]]
  text = "%x = f32[8]{0} all-reduce(%y), replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0','axis_1'}"
  assert parse_instruction(text).replica_groups(8) == [list(range(8))]
