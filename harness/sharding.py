"""Where arrays live on the mesh: batch over (data, fsdp), sequence over context, params over fsdp."""
from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from harness.mesh_axes import BATCH_AXES, CONTEXT, FSDP


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
