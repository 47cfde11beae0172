"""Per-generation TPU figures used to turn HLO costs into seconds.

Public figures (per chip) from the Google Cloud TPU system-architecture pages; HBM in GiB where the
page says GiB (the TPU7x page's comparison table gives v5p 95 GiB, v6e 32 GiB, TPU7x 192 GiB):
  v4    https://cloud.google.com/tpu/docs/v4     275 TFLOP/s bf16, "32 GiB, 1200 GBps" HBM2, 3D
        mesh/torus, pod bisection 24 TB/s (4096 chips, 16x16x16).
  v5e   https://cloud.google.com/tpu/docs/v5e    197 TFLOP/s bf16, "16 GB, 819 GBps" HBM2 (libtpu
        allows 15.75 GiB, more than 16e9 bytes, so the 16 is GiB), ICI 1600 Gbps, 4 ports, 2D torus.
  v5p   https://cloud.google.com/tpu/docs/v5p    459 TFLOP/s bf16, "HBM capacity per chip (GiB) 95"
        (96 GiB physical, 95 user-allocatable) at 2765 GBps, ICI 4800 Gbps (1200 GBps
        bidirectional), 3D torus (6 ports).
  v6e   https://cloud.google.com/tpu/docs/v6e    918 TFLOP/s bf16, 32 GiB HBM at 1640 GBps, ICI
        3584 Gbps (800 GBps bidirectional), 4 ICI ports, 2D torus.
  tpu7x https://cloud.google.com/tpu/docs/tpu7x  (Ironwood) 2307 TFLOP/s bf16, "HBM capacity per chip
        (GiB) 192" at 7380 GBps, bidirectional ICI 1200 GBps per chip, 3D torus in 4x4x4 cubes like
        v5p (6 ports assumed: the page gives no port count); two TensorCores a chip, each its own
        JAX device, so every per-device figure is half the chip's.
The per-chip ICI figure in Gbps is one direction (v5p: 4800 Gbps = 600 GB/s, half of the 1200 GB/s
bidirectional figure); per link and direction it is divided by the ports. v4's page gives no per-chip
ICI figure: 24 TB/s bisection over the 2*16*16 links cut in a 16^3 torus gives ~47 GB/s a link.

HBM a program may use is what libtpu allows, a little less than the published capacity (runtime
reservations): `libtpu_hbm_bytes` per device is the largest buffer total libtpu 0.0.42 compiles,
found by bisection on a one-device program (tests/test_aot_hbm.py checks it both ways). `fits_hbm` is
libtpu's verdict; the report gives the margin to that limit.

Clocks are not on those pages; they are derived as peak / (MXU FLOPs a cycle): a 128x128 MXU does
2*128*128 FLOPs a cycle, a 256x256 one 2*256*256. v4 and v5p: 2 TensorCores x 4 MXUs 128^2 -> 262,144
FLOPs/cycle -> 1.05 GHz and 1.75 GHz; v5e: 1 TensorCore x 4 MXUs 128^2 -> 1.5 GHz; v6e: 4 MXUs 256^2 ->
1.75 GHz; tpu7x, per TensorCore (one device): 4 MXUs 256^2 -> 1153.5 TFLOP/s / 524,288 = 2.2 GHz
(assumed: no MXU count is published). Cross-check with the compiler's own cost model: an 8192^3 bf16
matmul compiled for one device reports estimated_cycles equal to 90 % (v5p), 88 % (v5e), 70 % (v6e),
93 % (v4, megacore) and 81 % (tpu7x) of those MXU rates — consistent, and impossible with fewer MXUs
or a lower rate.
"""
from __future__ import annotations

import dataclasses

from harness.errors import UserError


@dataclasses.dataclass(frozen=True)
class ChipSpec:
  """Figures for one TPU generation, per chip unless named otherwise."""
  generation: str
  peak_bf16_flops: float        # FLOP/s per chip
  clock_hz: float               # derived, see module docstring
  hbm_bytes: float              # per chip
  hbm_bandwidth: float          # bytes/s per chip
  ici_bandwidth: float          # bytes/s per chip, one direction, all ports
  ici_ports: int
  devices_per_chip: int         # JAX devices a chip shows in an AOT topology (1; v4 in megacore mode)
  wraparound_multiple: int      # a slice dimension gets torus wrap links when it is a multiple of this
  collective_latency_s: float = 2e-6  # assumed fixed start-up cost per collective (not published)
  libtpu_hbm_bytes: float | None = None  # per device: the most libtpu lets a program use (measured)

  @property
  def link_bandwidth(self) -> float:
    """Bytes/s of one ICI link in one direction."""
    return self.ici_bandwidth / self.ici_ports

  @property
  def device_peak_flops(self) -> float:
    return self.peak_bf16_flops / self.devices_per_chip

  @property
  def device_hbm_bytes(self) -> float:
    return self.hbm_bytes / self.devices_per_chip

  @property
  def device_hbm_limit_bytes(self) -> float:
    """Bytes a program may use on one device: libtpu's limit where measured, else the capacity."""
    return self.libtpu_hbm_bytes or self.device_hbm_bytes

  @property
  def device_hbm_bandwidth(self) -> float:
    return self.hbm_bandwidth / self.devices_per_chip


_GIB = 1024 ** 3
HARDWARE = {
    "v4": ChipSpec("v4", 275e12, 275e12 / 262_144, 32 * _GIB, 1200e9, 6 * 46.9e9, 6, 1, 4,
                   libtpu_hbm_bytes=30.75 * _GIB),
    "v5e": ChipSpec("v5e", 197e12, 197e12 / 131_072, 16 * _GIB, 819e9, 1600e9 / 8, 4, 1, 16,
                    libtpu_hbm_bytes=15.75 * _GIB),
    "v5p": ChipSpec("v5p", 459e12, 459e12 / 262_144, 95 * _GIB, 2765e9, 4800e9 / 8, 6, 1, 4,
                    libtpu_hbm_bytes=95.74 * _GIB),
    "v6e": ChipSpec("v6e", 918e12, 918e12 / 524_288, 32 * _GIB, 1640e9, 3584e9 / 8, 4, 1, 16,
                    libtpu_hbm_bytes=31.25 * _GIB),
    "tpu7x": ChipSpec("tpu7x", 2307e12, 2307e12 / 2 / 524_288, 192 * _GIB, 7380e9, 1200e9 / 2, 6, 2,
                      4, libtpu_hbm_bytes=94.75 * _GIB),
}


def hardware_for(generation: str) -> ChipSpec:
  """The figures of a generation ('v4', 'v5e', 'v5p', 'v6e', 'tpu7x')."""
  if generation not in HARDWARE:
    raise UserError(f"aot.topology: no hardware figures for '{generation}'; known: {sorted(HARDWARE)}")
  return HARDWARE[generation]
