"""Pipelined projections (attention.pipelined_projections) against the standard model path."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from harness.attention import context_parallel_attention
from harness.attention import layout
from harness.attention.pipelined import pipelined_self_attention
from harness.configs import AttentionConfig
from harness.mesh import make_mesh
from harness.model import DiT, DiTConfig
from harness.model.block import Attention, Runtime
from harness.model.rope import rope_angles
from harness.steps import make_runtime
from attention_reference import normal

# float32: the sums of squares and the output projection are summed in another order than the
# unpipelined path, so equality holds to round-off, not bitwise.
TOL = 1e-5


def _attention(heads: int, dim: int) -> Attention:
  """An attention layer with every weight random (biases and norm scales too)."""
  cfg = DiTConfig(dim=dim, num_heads=heads, ffn_dim=2 * dim, num_layers=1)
  module = Attention(cfg, nnx.Rngs(0))
  graphdef, state = nnx.split(module)
  leaves, treedef = jax.tree.flatten(state)
  rng = np.random.default_rng(1)
  draw = lambda x: rng.standard_normal(x.shape, np.float32)
  leaves = [jnp.asarray(1.0 + 0.3 * draw(x) if x.ndim == 1 else draw(x) / np.sqrt(x.shape[0]),
                        np.float32) for x in leaves]
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


def _value_and_grads(module: Attention, x_BxSxD, angles_SxP, attend, projected):
  graphdef, state = nnx.split(module)
  ct_BxSxD = normal(np.random.default_rng(2), x_BxSxD.shape)

  def loss(state, x):
    out = nnx.merge(graphdef, state)(x, x, attend, angles_SxP, projected)
    return jnp.sum(out * ct_BxSxD), out

  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(state, x_BxSxD)
  return out, grads


def _assert_close(actual, expected):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    a, e = np.asarray(a), np.asarray(e)
    scale = max(1.0, float(np.max(np.abs(e))))
    np.testing.assert_allclose(a, e, rtol=TOL, atol=TOL * scale)


def _compare(heads, dim, context, data, grid, chunks, pad_heads=False, packed_qkv=False):
  mesh = make_mesh(data=data, context=context)
  module = _attention(heads, dim)
  tokens = grid[0] * grid[1] * grid[2]
  x_BxSxD = normal(np.random.default_rng(3), (data, tokens, dim))
  angles_SxP = rope_angles(grid, dim // heads)
  common = dict(mesh=mesh, num_chunks=chunks, kernel="xla", pad_heads=pad_heads,
                packed_qkv=packed_qkv)
  attend = functools.partial(context_parallel_attention, variant="ulysses", **common)
  projected = functools.partial(pipelined_self_attention, **common)
  expected = _value_and_grads(module, x_BxSxD, angles_SxP, attend, None)
  actual = _value_and_grads(module, x_BxSxD, angles_SxP, None, projected)
  _assert_close(actual, expected)


@pytest.mark.parametrize("heads,dim,context,data,grid,chunks,pad_heads,packed_qkv", [
    (12, 96, 4, 2, (2, 2, 2), 2, False, False),  # uneven groups: 8 and 4 heads
    (6, 48, 4, 2, (1, 2, 5), 2, True, True),  # padded heads, padded sequence, packed q/k/v
    (8, 64, 8, 1, (2, 2, 2), 1, False, False),  # one group
])
def test_values_and_grads_match_standard_path(heads, dim, context, data, grid, chunks, pad_heads,
                                              packed_qkv):
  _compare(heads, dim, context, data, grid, chunks, pad_heads, packed_qkv)


def test_grads_match_without_vma_check(monkeypatch):
  # Splash runs its shard_maps unchecked; the replicated weights' gradients must still be summed.
  monkeypatch.setattr(layout, "UNCHECKED_KERNELS", ("splash", "xla"))
  _compare(8, 64, 4, 2, (1, 2, 4), 2)


def test_one_all_to_all_set_per_group_and_one_for_the_norm():
  mesh = make_mesh(context=8)
  module = _attention(16, 64)
  x_BxSxD = jnp.ones((1, 16, 64))
  projected = functools.partial(pipelined_self_attention, mesh=mesh, num_chunks=2, kernel="xla")
  fn = jax.jit(lambda x: module(x, x, None, rope_angles((1, 4, 4), 4), projected))
  hlo = fn.lower(x_BxSxD).compile().as_text()
  # 4 per group (q, k, v, out) and one carrying every token's 1/rms of q and k.
  assert hlo.count(" all-to-all(") + hlo.count(" all-to-all-start(") == 4 * 2 + 1
  assert hlo.count(" all-gather(") + hlo.count(" all-gather-start(") == 0


def test_dit_forward_matches_through_runtime():
  cfg = DiTConfig(dim=128, num_heads=16, ffn_dim=64, num_layers=2, text_dim=16, text_len=4)
  mesh = make_mesh(context=8)
  model = DiT(cfg, rngs=nnx.Rngs(0))
  latents = normal(np.random.default_rng(4), (1, 2, 8, 8, 16))
  text = normal(np.random.default_rng(5), (1, 4, 16))
  t = jnp.array([300.0])
  run = lambda rt: jax.jit(lambda m, a, b, c: m(a, b, c, rt))(model, latents, t, text)
  base = AttentionConfig(num_chunks=2)
  expected = run(make_runtime(base, mesh, cfg.num_heads))
  rt = make_runtime(AttentionConfig(num_chunks=2, pipelined_projections=True), mesh,
                    cfg.num_heads)
  assert make_runtime(base, mesh, cfg.num_heads).projected_self_attention is None
  assert isinstance(rt, Runtime) and rt.projected_self_attention is not None
  _assert_close(run(rt), expected)


def test_other_variants_are_refused():
  with pytest.raises(ValueError, match=r"^attention.pipelined_projections=True needs "
                                       r"attention.variant='ulysses', got 'ring'"):
    make_runtime(AttentionConfig(variant="ring", pipelined_projections=True),
                 make_mesh(context=8), 16)
