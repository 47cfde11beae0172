"""TPU topologies for ahead-of-time compiles on any machine with libtpu installed."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from typing import Any

from jax.experimental import topologies

from harness.aot.hardware import ChipSpec, hardware_for
from harness.aot.native_stderr import quiet_libtpu
from harness.errors import UserError

_EXAMPLES = ("'v5p:2x2x2', 'v5p-16', 'v5e:2x4', 'v5litepod-8', 'v6e:2x4', 'v4:2x2x2', "
             "'tpu7x:2x2x1', 'tpu7x-8'")
# libtpu knows Ironwood as 'tpu7x' (it rejects 'v7x:...'); 'v7x' is accepted here as a spelling.
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v5e": "v5e", "v5p": "v5p", "v6e": "v6e", "v4": "v4",
            "tpu7x": "tpu7x", "v7x": "tpu7x"}
# v4 otherwise shows one device per TensorCore, which mesh utilities reject ("megacore" mode).
_CHIP_CONFIG = {"v4": {"chip_config_name": "megacore"}}
_NDIMS = {"v4": 3, "v5p": 3, "v5e": 2, "v6e": 2, "tpu7x": 3}
# Accelerator types name chips for v5e/v6e and TensorCores (2 a chip) for v4/v5p/tpu7x; these are the
# slice shapes the Cloud TPU pages list for each size.
_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16),
              256: (16, 16)}
_SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4),
              128: (4, 4, 8), 256: (4, 8, 8), 512: (8, 8, 8)}


@dataclasses.dataclass(frozen=True)
class Topology:
  """A TPU slice: canonical name ('v5p:2x2x2'), chip grid, JAX devices and hardware figures."""
  name: str
  generation: str
  dims: tuple[int, ...]
  devices: tuple[Any, ...]
  hardware: ChipSpec

  @property
  def num_chips(self) -> int:
    return math.prod(self.dims)

  @property
  def wraparound(self) -> tuple[bool, ...]:
    """Per dimension: whether the slice closes it into a ring (full cubes / full pods only)."""
    multiple = self.hardware.wraparound_multiple
    full = all(d % multiple == 0 for d in self.dims)
    return tuple(full and d > 2 for d in self.dims)


def _unknown(name: str) -> UserError:
  return UserError(f"aot.topology={name!r} is not a known TPU topology; use e.g. {_EXAMPLES}")


def parse_topology_name(name: str) -> tuple[str, tuple[int, ...]]:
  """'v5p:2x2x2' / 'v5p-16' / 'v5litepod-8' -> (generation, chip grid)."""
  m = re.fullmatch(r"\s*([a-z0-9]+?)(?:[:_]([0-9x]+)|-(\d+))\s*", str(name).lower())
  if not m or m.group(1) not in _ALIASES:
    raise _unknown(name)
  generation = _ALIASES[m.group(1)]
  ndims = _NDIMS[generation]
  if m.group(2):
    dims = tuple(int(d) for d in m.group(2).split("x") if d)
    if len(dims) != ndims or 0 in dims:
      raise _unknown(name)
    return generation, dims
  count = int(m.group(3))
  if ndims == 3:
    if count % 2:
      raise _unknown(name)
    count //= 2
  table = _SHAPES_3D if ndims == 3 else _SHAPES_2D
  if count not in table:
    raise _unknown(name)
  return generation, table[count]


class LibtpuMissingError(UserError, RuntimeError):
  """libtpu is not installed: a setup mistake the CLI reports in one line (exit 2)."""


def get_topology(name: str) -> Topology:
  """Resolves a topology name into TPU devices for AOT compiles (no TPU needed, libtpu is)."""
  generation, dims = parse_topology_name(name)
  if importlib.util.find_spec("libtpu") is None:
    raise LibtpuMissingError("aot: libtpu is not installed; install it with "
                             "pip install 'libtpu==0.0.42.*' (pip install -e . brings it) to "
                             "compile for TPU on this machine")
  # Compiling for a topology opens no TPU; without this, libtpu's lock file makes a second process
  # loading it at the same time (parallel tests, a sweep) fail.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  canonical = f"{generation}:{'x'.join(str(d) for d in dims)}"
  try:
    with quiet_libtpu():  # libtpu loads here and complains that this is no TPU VM
      desc = topologies.get_topology_desc(platform="tpu", topology_name=canonical,
                                          **_CHIP_CONFIG.get(generation, {}))
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f"aot.topology={name!r}: libtpu rejected {canonical!r} ({first})") from e
  return Topology(canonical, generation, dims, tuple(desc.devices), hardware_for(generation))
