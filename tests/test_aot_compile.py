"""AOT compiles for TPU topologies on CPU: topology names, flags, HBM, overlap of Ulysses all-to-alls."""
import importlib.util
import json

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from harness import api, configs
from harness.aot import cases
from harness.aot import run_aot
from harness.aot import topology as topology_lib
from harness.attention import context_parallel_attention
from harness.mesh import make_mesh

ASYNC_A2A = ("--xla_tpu_enable_async_all_to_all=true",
             "--xla_tpu_overlap_compute_collective_tc=true")


@pytest.mark.parametrize("name,canonical,dims", [
    ("v5p:2x2x2", "v5p", (2, 2, 2)), ("v5p-16", "v5p", (2, 2, 2)), ("v5p-8", "v5p", (2, 2, 1)),
    ("v5e:2x4", "v5e", (2, 4)), ("v5litepod-8", "v5e", (2, 4)), ("v6e:2x4", "v6e", (2, 4)),
    ("v4:2x2x2", "v4", (2, 2, 2)), ("v6e-16", "v6e", (4, 4)),
    ("tpu7x:2x2x1", "tpu7x", (2, 2, 1))])
def test_topology_names(name, canonical, dims):
  assert topology_lib.parse_topology_name(name) == (canonical, dims)


@pytest.mark.parametrize("name", ["bogus", "v5p:2x2", "v5e:2x2x2", "v3:2x2", "v5p-7", "v5p-6"])
def test_unknown_topology_is_one_line_error(name):
  with pytest.raises(ValueError, match=r"^aot\.topology=.*'v5p:2x2x2'.*'v5litepod-8'") as e:
    topology_lib.parse_topology_name(name)
  assert "\n" not in str(e.value)


def test_get_topology_devices():
  topo = topology_lib.get_topology("v5litepod-8")
  assert (topo.name, len(topo.devices), topo.num_chips) == ("v5e:2x4", 8, 8)
  assert topology_lib.get_topology("v5p-16").name == "v5p:2x2x2"


def test_libtpu_missing_is_one_line_error(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(topology_lib.importlib.util, "find_spec",
                      lambda n, *a: None if n == "libtpu" else real(n, *a))
  with pytest.raises(RuntimeError, match=r"^aot: libtpu is not installed") as e:
    topology_lib.get_topology("v5p:2x2x2")
  assert "\n" not in str(e.value)
  assert "pip install 'libtpu==0.0.42.*'" in str(e.value)
  assert isinstance(e.value, ValueError)  # so `python -m harness` prints it as one line, exit 2


def test_aot_config_validates():
  cfg = configs.AotConfig(topology="v5e:2x4", step="eval",
                          libtpu_flags=["--xla_tpu_enable_async_all_to_all=true"])
  assert cfg.libtpu_flags == ("--xla_tpu_enable_async_all_to_all=true",)
  assert cfg.flags(configs.HardwareConfig(("--xla_a=1",))) == cfg.libtpu_flags
  assert configs.AotConfig().flags(configs.HardwareConfig(("--xla_a=1",))) == ("--xla_a=1",)
  with pytest.raises(ValueError, match=r"^aot\.step='infer' is invalid; valid choices: 'train', "):
    configs.AotConfig(step="infer")
  with pytest.raises(ValueError, match=r"^aot\.libtpu_flags: 'xla_x' is not of the form"):
    configs.AotConfig(libtpu_flags=["xla_x"])
  with pytest.raises(ValueError, match=r"^hardware\.libtpu_flags: 'xla_x' is not of the form"):
    configs.HardwareConfig(libtpu_flags=["xla_x"])


def _attention(topology, heads, num_chunks, seq=1024):
  mesh = make_mesh(context=-1, devices=topology.devices)
  spec = NamedSharding(mesh, P(("data", "fsdp"), "context"))
  x = jax.ShapeDtypeStruct((1, seq, heads, 128), jnp.bfloat16, sharding=spec)
  fn = lambda q, k, v: context_parallel_attention(q, k, v, mesh=mesh, variant="ulysses",
                                                  num_chunks=num_chunks, kernel="xla")
  return fn, (x, x, x)


def _a2a_with_matmul_under(report):
  """Async all-to-alls with an attention matmul scheduled between their start and done."""
  return [a for a in report["async_collectives"] if a["kind"] == "all-to-all"
          and any("dot_general" in o["op_name"] for o in a["ops_between"])]


@pytest.fixture(scope="module")
def cube_reports(tmp_path_factory):
  topo = topology_lib.get_topology("v5p:2x2x2")
  reports = {}
  for chunks, flags in [(1, ASYNC_A2A), (2, ASYNC_A2A), (4, ASYNC_A2A), (4, ())]:
    out = tmp_path_factory.mktemp(f"c{chunks}_{len(flags)}")
    fn, args = _attention(topo, 32, chunks)
    reports[chunks, bool(flags)] = (run_aot(fn, args, topology=topo, flags=flags, out_dir=str(out),
                                            step_kind="eval", print_table=False), out)
  return reports


def test_without_flag_all_to_alls_are_synchronous(cube_reports):
  report, _ = cube_reports[4, False]
  assert report["collectives"]["all-to-all"] == {"count": 16, "async_count": 0, "executed": 16}
  assert report["async_collectives"] == []
  assert report["hidden_fraction"] == 0.0
  assert report["exposed_comm_s"] == pytest.approx(report["comm_s"])


def test_chunked_ulysses_overlaps_attention_with_all_to_all(cube_reports):
  for chunks in (2, 4):
    report, _ = cube_reports[chunks, True]
    a2a = report["collectives"]["all-to-all"]
    assert a2a["count"] == 4 * chunks
    assert a2a["async_count"] >= 2 * chunks
    assert _a2a_with_matmul_under(report)
  assert cube_reports[4, True][0]["hidden_fraction"] > 0.6
  assert cube_reports[4, True][0]["predicted_step_s"] < cube_reports[4, False][0]["predicted_step_s"]


def test_single_shot_hides_at_most_v_under_its_own_scores(cube_reports):
  # XLA's attention may compute q k^T while v is still in flight; the output all-to-all never
  # overlaps attention, and no other transfer has a matmul under it.
  report, _ = cube_reports[1, True]
  under = _a2a_with_matmul_under(report)
  assert len(under) <= 1
  assert report["hidden_fraction"] < cube_reports[4, True][0]["hidden_fraction"]


def test_aot_json_contract(cube_reports):
  report, out = cube_reports[2, True]
  on_disk = json.loads((out / "aot.json").read_text())
  for key in ("topology", "fits_hbm", "hbm_bytes", "collectives", "async_collectives", "comm_s",
              "compute_s", "exposed_comm_s", "hidden_fraction", "predicted_step_s",
              "libtpu_flags", "compute_by_kind_s", "layout_bytes", "hidden_under_attention_s",
              "hidden_under_attention_fraction", "predicted_step_s_bounds"):
    assert key in on_disk, key
  assert set(on_disk["compute_by_kind_s"]) == {"attention", "matmul", "layout", "other"}
  assert sum(on_disk["compute_by_kind_s"].values()) == pytest.approx(on_disk["compute_s"])
  assert on_disk["layout_bytes"] > 0
  assert on_disk["topology"]["name"] == "v5p:2x2x2"
  assert on_disk["libtpu_flags"] == list(ASYNC_A2A)
  assert on_disk["fits_hbm"] is True and 0 < on_disk["hbm_bytes"] < 2 ** 30
  assert on_disk["predicted_step_s"] == pytest.approx(
      on_disk["compute_s"] + on_disk["exposed_comm_s"])
  assert (out / "aot_hlo.txt").exists()


def test_four_chip_topology_overlaps(tmp_path):
  topo = topology_lib.get_topology("v5p:2x2x1")
  fn, args = _attention(topo, 16, 2)
  report = run_aot(fn, args, topology=topo, flags=ASYNC_A2A, out_dir=str(tmp_path),
                   print_table=False)
  assert report["topology"]["num_devices"] == 4
  assert report["collectives"]["all-to-all"]["count"] == 8
  assert report["collectives"]["all-to-all"]["async_count"] >= 4
  assert _a2a_with_matmul_under(report)


def test_too_big_for_hbm_is_reported_not_raised(tmp_path, capsys):
  topo = topology_lib.get_topology("v5p:2x2x1")
  mesh = make_mesh(context=-1, devices=topo.devices)
  # 128 GiB a device in and out: more than v5p's 95 GiB.
  x = jax.ShapeDtypeStruct((4 * 64 * 1024, 1024, 1024), jnp.bfloat16,
                           sharding=NamedSharding(mesh, P("context")))
  report = run_aot(lambda a: jnp.sin(a) * 2, (x,), topology=topo, out_dir=str(tmp_path))
  assert report["fits_hbm"] is False
  assert report["error"].startswith("does not fit in HBM: RESOURCE_EXHAUSTED")
  assert "compile failed: does not fit in HBM" in capsys.readouterr().out
  assert json.loads((tmp_path / "aot.json").read_text())["fits_hbm"] is False


def test_unknown_flag_is_one_line_error():
  topo = topology_lib.get_topology("v5p:2x2x1")
  fn, args = _attention(topo, 4, 1, seq=256)
  with pytest.raises(ValueError, match=r"^aot\.libtpu_flags: libtpu rejected a flag") as e:
    run_aot(fn, args, topology=topo, flags=["--xla_tpu_no_such_flag=true"], print_table=False)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["tpu_default", "tpu_async_a2a", "tpu_overlap_full",
                                  "tpu_maxdiffusion_inference"])
def test_shipped_flag_sets_parse_and_compile(name):
  cfg = api.read([f"hardware/{name}.gin"], [])[0].hardware
  assert all(f.startswith("--xla_") for f in cfg.libtpu_flags)
  assert (name == "tpu_default") == (not cfg.libtpu_flags)
  topo = topology_lib.get_topology("v5p:2x2x1")
  fn, args = _attention(topo, 4, 1, seq=256)
  report = run_aot(fn, args, topology=topo, flags=cfg.libtpu_flags, print_table=False)
  assert report["libtpu_flags"] == list(cfg.libtpu_flags)
  async_a2a = report["collectives"]["all-to-all"]["async_count"]
  assert (async_a2a > 0) == any("async_all_to_all=true" in f for f in cfg.libtpu_flags)


@pytest.mark.parametrize("name,generation", [("v5e:2x4", "v5e"), ("v6e:2x4", "v6e"),
                                             ("v4:2x2x2", "v4"), ("tpu7x:2x2x1", "tpu7x")])
def test_other_generations_compile(name, generation):
  topo = topology_lib.get_topology(name)
  fn, args = _attention(topo, 8, 1, seq=256)
  report = run_aot(fn, args, topology=topo, flags=ASYNC_A2A, print_table=False)
  assert report["topology"]["num_devices"] == 8
  assert report["hardware"]["generation"] == generation
  assert report["collectives"]["all-to-all"]["count"] == 4
  assert report["comm_s"] > 0 and report["compute_s"] > 0


def _kernel_under(report):
  """Async all-to-alls with a Pallas kernel (splash) scheduled between their start and done."""
  return [a for a in report["async_collectives"] if a["kind"] == "all-to-all"
          and any(o["opcode"] == "custom-call" for o in a["ops_between"])]


@pytest.fixture(scope="module")
def splash_reports():
  return {(chunks, flags): cases.run_case(cases.Case(tokens=2048, context=8, chunks=chunks,
                                                     heads=32), "splash", ASYNC_A2A if flags else ())
          for chunks in (1, 2) for flags in (True, False)}


def test_splash_single_shot_has_no_kernel_under_any_all_to_all(splash_reports):
  single, chunked = splash_reports[1, True], splash_reports[2, True]
  assert single["cost_sources"]["flops"] == 1 and chunked["cost_sources"]["flops"] == 2
  assert _kernel_under(single) == []
  assert _kernel_under(chunked)
  assert chunked["exposed_comm_s"] < single["exposed_comm_s"]
  assert single["hidden_under_attention_s"] == 0.0
  # At these small shapes the transfers finish under the layout copies before the kernel starts:
  # a kernel between start and done hides only what is left of the transfer when it runs.
  a2a = [a for a in chunked["async_collectives"] if a["kind"] == "all-to-all"]
  room = sum(min(a["comm_s"], a["compute_between_by_kind_s"].get("attention", 0.0)) for a in a2a)
  assert 0 <= chunked["hidden_under_attention_s"] <= room
  assert chunked["hidden_under_attention_fraction"] == pytest.approx(
      chunked["hidden_under_attention_s"] / chunked["comm_by_kind_s"]["all-to-all"])
  hidden_by_kind = sum(sum(a["hidden_by_kind_s"].values()) for a in a2a)
  assert hidden_by_kind <= sum(a["hidden_s"] for a in a2a) + 1e-12


def test_splash_gain_overlap_within_single_shot_exposure(splash_reports):
  from harness.aot import gain  # pylint: disable=g-import-not-at-top
  single, chunked = splash_reports[1, True], splash_reports[2, True]
  g = gain.predicted_gain(single, chunked)
  assert 0 < g.overlap <= single["exposed_comm_s"] / single["predicted_step_s"]
  assert g.total == pytest.approx(g.overlap + g.communication + sum(g.compute.values()))
  assert g.bounds[0] <= g.total <= g.bounds[1]
  low, high = single["predicted_step_s_bounds"]
  assert low <= single["predicted_step_s"] <= high


def test_splash_without_async_flag_overlaps_nothing(splash_reports):
  from harness.aot import gain  # pylint: disable=g-import-not-at-top
  single, chunked = splash_reports[1, False], splash_reports[2, False]
  assert chunked["collectives"]["all-to-all"]["async_count"] == 0
  assert single["hidden_under_attention_s"] == chunked["hidden_under_attention_s"] == 0.0
  g = gain.predicted_gain(single, chunked)
  assert g.overlap == 0.0
  assert g.total == pytest.approx(g.communication + sum(g.compute.values()))


@pytest.mark.parametrize("variant,collective", [("gspmd_heads", "all-to-all"),
                                                ("all_gather", "all-gather")])
def test_baseline_variants_compile_with_their_collectives(variant, collective):
  topo = topology_lib.get_topology("v5p:2x2x2")
  mesh = make_mesh(context=-1, devices=topo.devices)
  spec = NamedSharding(mesh, P(("data", "fsdp"), "context"))
  x = jax.ShapeDtypeStruct((2, 1024, 8, 128), jnp.bfloat16, sharding=spec)
  fn = lambda q, k, v: context_parallel_attention(q, k, v, mesh=mesh, variant=variant,
                                                  kernel="splash")
  report = run_aot(fn, (x, x, x), topology=topo, flags=ASYNC_A2A, print_table=False)
  # XLA reshards into and out of the head-sharded kernel; all_gather gathers K and V.
  assert report["collectives"][collective]["count"] >= 2, report["collectives"]
  assert report["comm_s"] > 0 and report["compute_s"] > 0
  if variant == "all_gather":
    assert "all-to-all" not in report["collectives"]
