"""The device mesh: its axis names, building it from plain sizes, joining a multi-process job, and
where arrays live on it (batch over data and fsdp, sequence over context, params over fsdp)."""
from __future__ import annotations

import math
import os
import socket
from typing import Sequence

import jax
import numpy as np
from jax._src import xla_bridge  # the public API has no 'is the backend up' query
from jax.experimental import mesh_utils
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec as P

from harness.errors import UserError

# The four axes of every mesh, in order; the batch is split over the first two.
DATA = "data"
FSDP = "fsdp"
CONTEXT = "context"
TENSOR = "tensor"
AXES = (DATA, FSDP, CONTEXT, TENSOR)
BATCH_AXES = (DATA, FSDP)


def resolve_axis_sizes(sizes: dict[str, int], num_devices: int) -> dict[str, int]:
  """Fills the one axis given as -1 with the rest of the devices; checks the product."""
  sizes = dict(sizes)
  for axis in AXES:
    sizes.setdefault(axis, 1)
  unknown = [a for a in AXES if sizes[a] == -1]
  for axis in AXES:
    if sizes[axis] == 0 or sizes[axis] < -1:
      raise UserError(f"mesh.{axis}={sizes[axis]}: axis sizes must be positive or -1 (the rest)")
  if len(unknown) > 1:
    raise UserError(
        f"mesh.{unknown[0]} and mesh.{unknown[1]} are both -1: at most one axis may take the rest")
  known = math.prod(sizes[a] for a in AXES if sizes[a] != -1)
  if unknown:
    if num_devices % known:
      raise UserError(
          f"mesh.{unknown[0]}=-1 cannot take the rest: the other axes multiply to {known}, "
          f"which does not divide the {num_devices} devices")
    sizes[unknown[0]] = num_devices // known
  product = math.prod(sizes[a] for a in AXES)
  if product != num_devices:
    shape = " x ".join(f"{a}={sizes[a]}" for a in AXES)
    raise UserError(
        f"mesh.data/fsdp/context/tensor multiply to {product} ({shape}) but there are "
        f"{num_devices} devices; set one axis to -1 to take the rest")
  return {a: sizes[a] for a in AXES}


def make_mesh(data: int = 1, fsdp: int = 1, context: int = -1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a Mesh over `devices` (default: all) with the harness's four axes."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_axis_sizes(
      {"data": data, "fsdp": fsdp, "context": context, "tensor": tensor}, len(devices))
  shape = [sizes[a] for a in AXES]
  if devices[0].platform == "tpu":
    # Lays the axes out along the physical torus so 'context' collectives use ICI neighbours.
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  else:
    grid = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(grid, AXES)


def platform(mesh: Mesh | AbstractMesh) -> str | None:
  """The platform a mesh's devices compile for (a TPU topology's on a CPU host); None if abstract."""
  if isinstance(mesh, AbstractMesh):
    return None
  return mesh.devices.flat[0].platform


def use_simulated_devices(count: int) -> None:
  """Asks for `count` CPU devices; must run before the JAX backend starts."""
  if count <= 0:
    raise UserError(f"mesh.simulated_devices={count}: must be > 0")
  if xla_bridge.backends_are_initialized():
    have = jax.devices()
    if have[0].platform == "cpu" and len(have) == count:
      return
    raise UserError(
        f"mesh.simulated_devices={count} was requested after JAX started with {len(have)} "
        f"{have[0].platform} devices; set it before any JAX computation (or set "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={count})")
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", count)


def coordinator_bind_address(coordinator_address: str) -> str:
  """Where process 0's coordinator listens: the interface of the address the peers dial.

  JAX's default, '[::]:PORT', listens on every interface, so '127.0.0.1:PORT' would accept
  connections from the network. JAX_COORDINATOR_BIND_ADDRESS still overrides (e.g. '[::]:PORT'
  behind NAT, where the dialled address is not one of this host's interfaces).
  """
  return os.environ.get("JAX_COORDINATOR_BIND_ADDRESS") or coordinator_address


def _split_host_port(address: str) -> tuple[str, int]:
  """('10.0.0.2', 1234) from '10.0.0.2:1234' (IPv6 in brackets); a one-line error otherwise."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise UserError(f"mesh.coordinator_address={address!r}: expected HOST:PORT "
                    "(e.g. '10.0.0.2:1234')")
  return host.strip("[]"), int(port)


def check_coordinator_bind(coordinator_address: str) -> None:
  """For process 0: a one-line error if this host cannot listen where the coordinator binds."""
  host = coordinator_bind_address(coordinator_address).rpartition(":")[0].strip("[]")
  try:
    for family, kind, _, _, sockaddr in socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM):
      with socket.socket(family, kind) as probe:
        probe.bind(sockaddr[:1] + (0,) + sockaddr[2:])
  except OSError as err:
    raise UserError(
        f"mesh.coordinator_address={coordinator_address!r}: process 0 cannot listen on "
        f"{host!r} ({err.strerror or err}); give an address of this host, or set "
        f"JAX_COORDINATOR_BIND_ADDRESS='[::]:PORT' to listen on every interface") from None


def init_distributed(coordinator_address: str | None, num_processes: int | None,
                     process_id: int | None, heartbeat_timeout_s: int = 100,
                     init_timeout_s: int = 300) -> None:
  """Joins a multi-process job when bindings or the usual environment say so."""
  explicit = coordinator_address is not None
  # Multi-host TPU slices list several workers; jax.distributed discovers the rest there.
  from_env = ("JAX_COORDINATOR_ADDRESS" in os.environ
              or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""))
  if not (explicit or from_env):
    return
  if jax.config.jax_platforms == "cpu" or os.environ.get("JAX_PLATFORMS") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    if num_processes is None or process_id is None:
      raise UserError("mesh.coordinator_address needs mesh.num_processes and mesh.process_id too")
    if not 0 <= process_id < num_processes:
      raise UserError(f"mesh.process_id={process_id}: must be in [0, mesh.num_processes="
                      f"{num_processes}), one distinct id per process")
    _split_host_port(coordinator_address)
    if process_id == 0:  # JAX crashes (SIGSEGV) when its coordinator cannot bind
      check_coordinator_bind(coordinator_address)
    jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=init_timeout_s,
                               heartbeat_timeout_seconds=heartbeat_timeout_s,
                               coordinator_bind_address=coordinator_bind_address(
                                   coordinator_address))
  else:
    jax.distributed.initialize(initialization_timeout=init_timeout_s,
                               heartbeat_timeout_seconds=heartbeat_timeout_s)


def batch_sharding(mesh: Mesh, ndim: int, batch: int | None = None) -> NamedSharding:
  """Leading batch axis split over data and fsdp, the rest replicated.

  A `batch` that does not split stays replicated: an eval batch of 1 on mesh.data=2 is doubled
  into the CFG pair inside the step, and that pair is what the data axes share.
  """
  ways = mesh.shape[BATCH_AXES[0]] * mesh.shape[BATCH_AXES[1]]
  batch_axes = None if batch is not None and batch % ways else BATCH_AXES
  return NamedSharding(mesh, P(batch_axes, *([None] * (ndim - 1))))


def activation_sharding(mesh: Mesh) -> NamedSharding:
  """[batch, tokens, width] activations: tokens split over 'context'."""
  return NamedSharding(mesh, P(BATCH_AXES, CONTEXT, None))


def param_spec(shape: tuple[int, ...], fsdp: int, stacked: bool) -> P:
  """Shards the largest non-layer dimension that fsdp divides; small arrays stay replicated."""
  spec = [None] * len(shape)
  first = 1 if stacked else 0
  dims = sorted(range(first, len(shape)), key=lambda i: -shape[i])
  if fsdp > 1 and len(shape) - first >= 2:
    for i in dims:
      if shape[i] % fsdp == 0:
        spec[i] = FSDP
        break
  return P(*spec)


def param_shardings(abstract_params, mesh: Mesh):
  """NamedShardings for a params pytree; arrays under 'blocks' carry a leading layer axis."""
  fsdp = mesh.shape[FSDP]

  def one(path, leaf):
    stacked = any(getattr(k, "key", None) == "blocks" for k in path)
    return NamedSharding(mesh, param_spec(tuple(leaf.shape), fsdp, stacked))

  return jax.tree_util.tree_map_with_path(one, abstract_params)
