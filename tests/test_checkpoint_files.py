"""The harness's checkpoints hold what orbax's own array handler writes, and read back exactly."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from harness import checkpoint
from harness.mesh import make_mesh


def test_a_replicated_state_round_trips_with_orbax_array_metadata(tmp_path):
  mesh = make_mesh(context=8, devices=jax.devices()[:8])
  replicated = NamedSharding(mesh, P())
  small = jax.device_put(jnp.arange(12, dtype=jnp.float32).reshape(3, 4), replicated)
  # Each of the 8 replicas' slices at the threshold: saved in slices, as orbax does by default.
  large = jax.device_put(jnp.ones((4 * checkpoint.MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL,),
                                  jnp.bfloat16) * 3, replicated)
  state = {"params": {"small": small, "large": large}, "step": jax.device_put(jnp.asarray(7, jnp.int32), replicated)}
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", every=1, fingerprint="f")
  assert ckpt.maybe_save(1, state, force=True)
  ckpt.close()

  step_dir = tmp_path / "checkpoints" / "1" / "default"
  assert (step_dir / "array_metadatas").is_dir()  # what orbax's default handler writes too
  reader = checkpoint.Checkpointer(tmp_path / "checkpoints", every=1, fingerprint="f",
                                   read_only=True)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
  restored, step = reader.restore(abstract)
  reader.close()
  assert step == 1
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert got.sharding.is_equivalent_to(want.sharding, want.ndim)
