"""Device mesh with axes (data, fsdp, context, tensor) from plain sizes."""
from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from harness.mesh_axes import AXES


def resolve_axis_sizes(sizes: dict[str, int], num_devices: int) -> dict[str, int]:
  """Fills the one axis given as -1 with the rest of the devices; checks the product."""
  sizes = dict(sizes)
  for axis in AXES:
    sizes.setdefault(axis, 1)
  unknown = [a for a in AXES if sizes[a] == -1]
  for axis in AXES:
    if sizes[axis] == 0 or sizes[axis] < -1:
      raise ValueError(f"mesh.{axis}={sizes[axis]}: axis sizes must be positive or -1 (the rest)")
  if len(unknown) > 1:
    raise ValueError(
        f"mesh.{unknown[0]} and mesh.{unknown[1]} are both -1: at most one axis may take the rest")
  known = math.prod(sizes[a] for a in AXES if sizes[a] != -1)
  if unknown:
    if num_devices % known:
      raise ValueError(
          f"mesh.{unknown[0]}=-1 cannot take the rest: the other axes multiply to {known}, "
          f"which does not divide the {num_devices} devices")
    sizes[unknown[0]] = num_devices // known
  product = math.prod(sizes[a] for a in AXES)
  if product != num_devices:
    shape = " x ".join(f"{a}={sizes[a]}" for a in AXES)
    raise ValueError(
        f"mesh.data/fsdp/context/tensor multiply to {product} ({shape}) but there are "
        f"{num_devices} devices; set one axis to -1 to take the rest")
  return {a: sizes[a] for a in AXES}


def make_mesh(data: int = 1, fsdp: int = 1, context: int = -1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a Mesh over `devices` (default: all) with the harness's four axes."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_axis_sizes(
      {"data": data, "fsdp": fsdp, "context": context, "tensor": tensor}, len(devices))
  grid = np.asarray(devices, dtype=object).reshape([sizes[a] for a in AXES])
  return Mesh(grid, AXES)
