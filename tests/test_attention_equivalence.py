"""Head-chunked Ulysses equals single-shot bit for bit, and both match the float64 reference.

The grid heads x kv_heads x degree x chunks x (sequence divisible or not) is covered pairwise.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness.attention import context_parallel_attention
from harness.attention import heads as heads_lib
from harness.mesh import make_mesh
import attention_reference
from attention_reference import normal

FP32_TOL = 1e-5
HEAD_DIM = 8

# (heads, kv_heads, degree, num_chunks, seq): every pair of values of any two factors appears,
# with heads in {8, 16, 40, 12 (padded when the degree is 8)}, kv_heads in {heads, 8, 2, 1},
# degree in {2, 4, 8}, chunks in {1, 2, 3, 5} where valid, seq a multiple of the degree or not.
PAIRWISE = [
    (40, 1, 8, 5, 67), (12, 1, 4, 1, 64), (16, 16, 4, 2, 67), (8, 8, 2, 3, 64),
    (16, 2, 2, 1, 67), (40, 2, 8, 2, 64), (12, 12, 2, 5, 64), (12, 2, 4, 3, 67),
    (8, 8, 8, 1, 67), (40, 8, 4, 5, 67), (8, 1, 2, 2, 64), (16, 8, 8, 2, 64),
    (40, 40, 2, 3, 64), (16, 1, 2, 3, 67), (12, 1, 8, 2, 67), (8, 8, 4, 1, 67),
    (16, 2, 2, 5, 67), (40, 40, 2, 1, 64), (8, 2, 4, 2, 64), (40, 1, 8, 3, 64),
]


def mesh_of(context: int):
  return make_mesh(context=context, devices=jax.devices()[:context])


def make_inputs(heads, kv_heads, seq, dtype=jnp.float32, batch=1, seq_kv=None, seed=0):
  rng = np.random.default_rng(seed)
  seq_kv = seq if seq_kv is None else seq_kv
  q = normal(rng, (batch, seq, heads, HEAD_DIM), dtype)
  k = normal(rng, (batch, seq_kv, kv_heads, HEAD_DIM), dtype)
  v = normal(rng, (batch, seq_kv, kv_heads, HEAD_DIM), dtype)
  cotangent = normal(rng, q.shape, dtype)
  return q, k, v, cotangent


def value_and_grads(q, k, v, cotangent, **attention_kwargs):
  """Output and q/k/v gradients of sum(out * cotangent), compiled once."""
  def loss(q, k, v):
    out = context_parallel_attention(q, k, v, **attention_kwargs)
    return jnp.sum((out * cotangent).astype(jnp.float32)), out

  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
  return (out, *grads)


def reference_value_and_grads(q, k, v, cotangent, kv_valid_len=None):
  """The float64 numpy reference's (out, dq, dk, dv) of sum(out * cotangent)."""
  out, _, *grads = attention_reference.reference(q, k, v, kv_valid_len, cotangent)
  return (out, *grads)


def max_abs_errors(results, reference):
  return [float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
          for a, b in zip(results, reference)]


@pytest.mark.parametrize("heads,kv_heads,degree,num_chunks,seq", PAIRWISE)
def test_chunked_is_bitwise_single_shot_and_matches_reference(heads, kv_heads, degree,
                                                              num_chunks, seq):
  mesh = mesh_of(degree)
  q, k, v, cotangent = make_inputs(heads, kv_heads, seq)
  pad_heads = heads % degree != 0
  single = value_and_grads(q, k, v, cotangent, mesh=mesh, variant="ulysses", num_chunks=1,
                           pad_heads=pad_heads)
  reference = reference_value_and_grads(q, k, v, cotangent)
  assert max(max_abs_errors(single, reference)) <= FP32_TOL
  if num_chunks > 1:
    chunked = value_and_grads(q, k, v, cotangent, mesh=mesh, variant="ulysses",
                              num_chunks=num_chunks, pad_heads=pad_heads)
    for name, a, b in zip(("out", "dq", "dk", "dv"), chunked, single):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def _sizings_differ(heads, degree, num_chunks) -> bool:
  padded = -(-heads // degree) * degree
  return (heads_lib.chunk_ranges(padded, degree, num_chunks, "remainder_last")
          != heads_lib.chunk_ranges(padded, degree, num_chunks, "larger_first"))


@pytest.mark.parametrize("heads,kv_heads,degree,num_chunks,seq",
                         [c for c in PAIRWISE if _sizings_differ(c[0], c[2], c[3])])
def test_remainder_last_chunks_are_bitwise_single_shot(heads, kv_heads, degree, num_chunks, seq):
  mesh = mesh_of(degree)
  q, k, v, cotangent = make_inputs(heads, kv_heads, seq)
  common = dict(mesh=mesh, variant="ulysses", pad_heads=heads % degree != 0)
  single = value_and_grads(q, k, v, cotangent, num_chunks=1, **common)
  chunked = value_and_grads(q, k, v, cotangent, num_chunks=num_chunks,
                            chunk_sizing="remainder_last", **common)
  for name, a, b in zip(("out", "dq", "dk", "dv"), chunked, single):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


# A CFG pair: batch 2 on a context-only mesh, so each device folds both rows into its heads.
CFG_CASES = [(40, 40, 8, 5, 64), (16, 2, 4, 2, 67), (12, 12, 8, 2, 64)]


@pytest.mark.parametrize("heads,kv_heads,degree,num_chunks,seq", CFG_CASES)
def test_cfg_batch_folded_into_heads_is_bitwise_across_chunks(heads, kv_heads, degree,
                                                              num_chunks, seq):
  mesh = mesh_of(degree)
  q, k, v, cotangent = make_inputs(heads, kv_heads, seq, batch=2)
  common = dict(mesh=mesh, variant="ulysses", pad_heads=heads % degree != 0)
  single = value_and_grads(q, k, v, cotangent, num_chunks=1, **common)
  reference = reference_value_and_grads(q, k, v, cotangent)
  assert max(max_abs_errors(single, reference)) <= FP32_TOL
  for sizing in heads_lib.CHUNK_SIZINGS:
    chunked = value_and_grads(q, k, v, cotangent, num_chunks=num_chunks, chunk_sizing=sizing,
                              **common)
    for name, a, b in zip(("out", "dq", "dk", "dv"), chunked, single):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{sizing} {name}")
