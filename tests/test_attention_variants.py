"""Every variant and CPU kernel against the float64 reference, on values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harness.attention import context_parallel_attention
from harness.attention import cross_attention
from harness.attention import kernels
from harness.attention.dense import dense_attention
from test_attention_equivalence import make_inputs
from test_attention_equivalence import max_abs_errors
from test_attention_equivalence import mesh_of
from test_attention_equivalence import reference_value_and_grads
from test_attention_equivalence import value_and_grads

TOL = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}
SMALL_BLOCKS = kernels.KernelOptions(block_q=8, block_kv=8)

# (variant, context, heads, kv_heads, seq, extra arguments): GQA, ragged sequences, masks that
# leave whole ring blocks empty, packed sends of q,k,v together and of k,v only; the baselines with
# kv heads that split over the devices and ones that do not (GQA/MQA), and padded heads.
CASES = [
    ("dense", 4, 8, 2, 19, dict()),
    ("dense", 4, 4, 1, 21, dict(kv_valid_len=13)),
    ("ring", 4, 4, 2, 19, dict()),
    ("ring", 4, 4, 1, 21, dict(packed_qkv=True, kv_valid_len=13)),
    ("ulysses", 4, 8, 2, 19, dict(num_chunks=2, packed_qkv=True)),
    ("ulysses", 2, 16, 2, 16, dict(num_chunks=2, packed_qkv=True)),
    ("ulysses", 8, 12, 4, 20, dict(num_chunks=2, pad_heads=True, kv_valid_len=9)),
    ("ulysses_ring", 4, 8, 2, 19, dict(ulysses_degree=2, num_chunks=2)),
    ("ulysses_ring", 8, 16, 16, 34, dict(ulysses_degree=4, num_chunks=2, packed_qkv=True,
                                         kv_valid_len=30)),
    ("gspmd_heads", 4, 8, 2, 19, dict()),
    ("gspmd_heads", 4, 8, 4, 16, dict(kv_valid_len=11)),
    ("gspmd_heads", 8, 12, 4, 20, dict(pad_heads=True, kv_valid_len=9)),
    ("all_gather", 4, 8, 2, 19, dict()),
    ("all_gather", 4, 4, 1, 21, dict(packed_qkv=True, kv_valid_len=13)),
]


@pytest.mark.parametrize("variant,context,heads,kv_heads,seq,extra", CASES)
def test_variant_matches_reference_fp32(variant, context, heads, kv_heads, seq, extra):
  mesh = mesh_of(context)
  q, k, v, cotangent = make_inputs(heads, kv_heads, seq)
  got = value_and_grads(q, k, v, cotangent, mesh=mesh, variant=variant, **extra)
  want = reference_value_and_grads(q, k, v, cotangent, extra.get("kv_valid_len"))
  assert max(max_abs_errors(got, want)) <= TOL[jnp.float32]


@pytest.mark.parametrize("variant,extra", [("ulysses", dict(num_chunks=2)), ("ring", dict()),
                                           ("gspmd_heads", dict()), ("all_gather", dict())])
def test_blockwise_kernel_matches_reference_fp32(variant, extra):
  mesh = mesh_of(4)
  q, k, v, cotangent = make_inputs(8, 4, 38)
  got = value_and_grads(q, k, v, cotangent, mesh=mesh, variant=variant, kernel="blockwise",
                        kernel_options=SMALL_BLOCKS, kv_valid_len=35, **extra)
  want = reference_value_and_grads(q, k, v, cotangent, 35)
  assert max(max_abs_errors(got, want)) <= TOL[jnp.float32]


@pytest.mark.parametrize("variant,extra", [
    ("ulysses", dict(num_chunks=2)), ("ring", dict(packed_qkv=True)), ("gspmd_heads", dict()),
    ("all_gather", dict(packed_qkv=True))])
def test_bf16_matches_reference(variant, extra):
  mesh = mesh_of(4)
  q, k, v, cotangent = make_inputs(8, 8, 24, dtype=jnp.bfloat16)
  got = value_and_grads(q, k, v, cotangent, mesh=mesh, variant=variant, **extra)
  want = reference_value_and_grads(q, k, v, cotangent)
  assert all(x.dtype == jnp.bfloat16 for x in got)
  assert max(max_abs_errors(got, want)) <= TOL[jnp.bfloat16]


def test_traced_kv_valid_len_masks_keys_exactly():
  mesh = mesh_of(4)
  q, k, v, _ = make_inputs(8, 8, 24)

  @jax.jit
  def both(q, k, v, valid):
    return (context_parallel_attention(q, k, v, mesh=mesh, num_chunks=2, kv_valid_len=valid),
            context_parallel_attention(q, k, v, mesh=mesh, variant="ring", kv_valid_len=valid))

  for valid in (17, 5):
    want = dense_attention(q, k[:, :valid], v[:, :valid])
    for got in both(q, k, v, jnp.int32(valid)):
      assert max_abs_errors([got], [want])[0] <= TOL[jnp.float32]


def test_dense_matches_float64_numpy():
  q, k, v, _ = make_inputs(4, 2, 6, seq_kv=5)
  dense = jax.jit(dense_attention)
  q64, k64, v64 = (np.repeat(np.asarray(x, np.float64), r, axis=2)
                   for x, r in ((q, 1), (k, 2), (v, 2)))
  logits = np.einsum("bshd,bthd->bhst", q64, k64) / np.sqrt(q.shape[-1])
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  want = np.einsum("bhst,bthd->bshd", probs / probs.sum(-1, keepdims=True), v64)
  np.testing.assert_allclose(dense(q, k, v), want, atol=1e-6)
  assert not np.any(np.asarray(dense(q, k, v, kv_valid_len=0)))


def test_cross_attention_keeps_q_sharded_and_sends_nothing():
  mesh = mesh_of(4)
  q, _, _, cotangent = make_inputs(8, 8, 19)
  _, k, v, _ = make_inputs(8, 8, 12, seed=1)
  def loss(q, k, v):
    out = cross_attention(q, k, v, mesh=mesh, kv_valid_len=7)
    return jnp.sum(out * cotangent), out

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
  (_, out), grads = step(q, k, v)
  want = reference_value_and_grads(q, k, v, cotangent, 7)
  assert max(max_abs_errors((out, *grads), want)) <= TOL[jnp.float32]
  forward = jax.jit(lambda q, k, v: cross_attention(q, k, v, mesh=mesh)).lower(q, k, v)
  assert " all-to-all(" not in forward.compile().as_text()
