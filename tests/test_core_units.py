"""Small pure pieces of the core: mesh sizes, sharding rule, data, schedules, RoPE, flags."""
import os

import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from harness import configs as C
from harness import data, diffusion, mesh
from harness.model import rope


def test_axis_sizes_fill_the_rest():
  assert mesh.resolve_axis_sizes({"data": 2, "context": -1}, 8) == {
      "data": 2, "fsdp": 1, "context": 4, "tensor": 1}


@pytest.mark.parametrize("sizes,message", [
    ({"data": -1, "context": -1}, "are both -1"),
    ({"data": 3, "context": -1}, "does not divide the 8 devices"),
    ({"data": 0}, "mesh.data=0: axis sizes must be positive or -1"),
])
def test_axis_size_errors(sizes, message):
  with pytest.raises(ValueError, match=message):
    mesh.resolve_axis_sizes(sizes, 8)


def test_abstract_mesh_needs_no_devices_when_sizes_are_explicit():
  m = C.MeshConfig(data=2, fsdp=4, context=16, tensor=1).abstract()
  assert dict(m.shape) == {"data": 2, "fsdp": 4, "context": 16, "tensor": 1}


def test_param_spec_shards_largest_fsdp_divisible_dim():
  assert mesh.param_spec((40, 5120, 13824), fsdp=4, stacked=True) == P(None, None, "fsdp")
  assert mesh.param_spec((40, 5120), fsdp=4, stacked=True) == P(None, None)  # a bias
  assert mesh.param_spec((8, 30), fsdp=4, stacked=False) == P("fsdp", None)
  assert mesh.param_spec((5120, 64), fsdp=1, stacked=False) == P(None, None)


def test_synthetic_batch_is_a_pure_function_of_the_step():
  spec = data.DataSpec(batch=2, latent=(2, 8, 8, 16), text_len=4, text_dim=8, seed=3)
  a, b, c = (data.synthetic_batch(spec, jnp.int32(s)) for s in (5, 5, 6))
  assert a["latents"].shape == (2, 2, 8, 8, 16) and a["text"].shape == (2, 4, 8)
  np.testing.assert_array_equal(a["latents"], b["latents"])
  assert not np.array_equal(a["latents"], c["latents"])


def test_sigma_schedule_runs_from_one_to_zero_and_shift_keeps_noise_high():
  s = np.asarray(diffusion.sigma_schedule(4, shift=5.0))
  assert s[0] == 1.0 and s[-1] == 0.0 and np.all(np.diff(s) < 0)
  assert s[2] > 0.5  # unshifted midpoint is 0.5; shift 5 gives 5*0.5/(1+4*0.5)=0.833
  np.testing.assert_allclose(s[2], 2.5 / 3.0, rtol=1e-6)


def test_rope_preserves_norm_and_depends_on_relative_position():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 32, 2, 16), np.float32))
  angles = rope.rope_angles((2, 4, 4), 16)
  y = rope.apply_rope(x, angles)
  np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
  # Same vector at two positions: the dot product depends only on the position difference.
  v = jnp.broadcast_to(x[:, :1], x.shape)
  r = rope.apply_rope(v, angles)[0, :, 0]
  grid = np.arange(32).reshape(2, 4, 4)
  d1 = jnp.dot(r[grid[0, 0, 0]], r[grid[0, 0, 1]])
  d2 = jnp.dot(r[grid[1, 2, 2]], r[grid[1, 2, 3]])
  np.testing.assert_allclose(d1, d2, rtol=1e-5)
  assert sum(rope.axis_pair_counts(128)) == 64 and rope.axis_pair_counts(128) == (22, 21, 21)


def test_libtpu_flags_go_to_the_environment_without_overriding_the_user(monkeypatch):
  monkeypatch.setenv("LIBTPU_INIT_ARGS", "--xla_tpu_enable_async_all_to_all=false")
  C.HardwareConfig(libtpu_flags=("--xla_tpu_enable_async_all_to_all=true",
                                  "--xla_tpu_overlap_compute_collective_tc=true")).apply()
  assert os.environ["LIBTPU_INIT_ARGS"] == ("--xla_tpu_enable_async_all_to_all=false "
                                            "--xla_tpu_overlap_compute_collective_tc=true")
