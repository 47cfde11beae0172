"""HBM verdicts agree with libtpu: published capacities, libtpu's limits, the margin; TPU7x figures."""
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import SingleDeviceSharding

from harness.aot import report as report_lib
from harness.aot import topology as topology_lib
from harness.aot.hardware import HARDWARE
from harness.aot.compile_step import compile_and_analyze

GIB = 1024 ** 3
SLICES = {"v4": "v4:2x2x1", "v5e": "v5e:2x4", "v5p": "v5p:2x2x1", "v6e": "v6e:2x2",
          "tpu7x": "tpu7x:2x2x1"}


def _report(topology_name: str, total_bytes: float) -> dict:
  """Compiles x + 1 on one device with input and output of total_bytes together."""
  topo = topology_lib.get_topology(topology_name)
  n = int(total_bytes // 2 // 4096 * 1024)
  x = jax.ShapeDtypeStruct((n,), jnp.float32, sharding=SingleDeviceSharding(topo.devices[0]))
  report, _ = compile_and_analyze(lambda a: a + 1.0, (x,), topo)
  return report


@pytest.mark.parametrize("generation", sorted(SLICES))
def test_libtpu_limit_is_where_libtpu_starts_refusing(generation):
  limit = HARDWARE[generation].device_hbm_limit_bytes
  below = _report(SLICES[generation], limit - 32 * 2 ** 20)
  assert below["fits_hbm"] is True and below["hbm_limit_bytes"] == limit
  assert 0 <= below["hbm_margin_bytes"] < 64 * 2 ** 20
  above = _report(SLICES[generation], limit + 32 * 2 ** 20)
  assert above["fits_hbm"] is False and above["hbm_bytes"] is None
  assert -64 * 2 ** 20 < above["hbm_margin_bytes"] < 0


def test_v6e_program_over_32e9_bytes_is_reported_as_fitting(capsys):
  report = _report("v6e:2x2", 29.93 * GIB)
  assert report["hbm_bytes"] > 32e9 and report["fits_hbm"] is True
  line = report_lib.format_table(dict(report, step="eval"))
  assert "of 31.25 GiB usable (32.00 GiB published) -> fits, margin +1.3" in line
  assert "confirm on hardware" not in line
  over = dict(report, step="eval", hbm_margin_bytes=-0.03 * GIB)
  assert "margin -0.03 GiB (memory_analysis's sum exceeds" in report_lib.format_table(over)


@pytest.mark.parametrize("generation,published_gib", [
    ("v4", 32), ("v5e", 16), ("v5p", 95), ("v6e", 32), ("tpu7x", 192)])
def test_published_capacity_per_chip(generation, published_gib):
  hw = HARDWARE[generation]
  assert hw.hbm_bytes == published_gib * GIB
  # libtpu keeps a little for itself; never more than the published capacity of a device.
  assert 0.95 * hw.device_hbm_bytes < hw.device_hbm_limit_bytes <= hw.device_hbm_bytes + GIB


@pytest.mark.parametrize("name,dims", [("tpu7x:2x2x1", (2, 2, 1)), ("tpu7x-8", (2, 2, 1)),
                                       ("v7x:2x2x2", (2, 2, 2)), ("tpu7x-16", (2, 2, 2))])
def test_tpu7x_names(name, dims):
  assert topology_lib.parse_topology_name(name) == ("tpu7x", dims)


def test_tpu7x_has_two_devices_a_chip():
  topo = topology_lib.get_topology("tpu7x:2x2x2")
  assert topo.name == "tpu7x:2x2x2" and topo.num_chips == 8 and len(topo.devices) == 16
  hw = topo.hardware
  assert hw.devices_per_chip == 2
  assert hw.device_peak_flops == pytest.approx(2307e12 / 2)
  assert hw.device_hbm_bytes == 96 * GIB
  assert hw.device_hbm_bandwidth == pytest.approx(7380e9 / 2)
