"""Every CPU kernel against a float64 numpy reference, on values, gradients and the lse form."""
import logging

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from harness.attention import kernels
import attention_reference
from attention_reference import normal

CPU_KERNELS = ("xla", "blockwise")
TOL = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}
# Small blocks so that the tiny test sequences span several q and kv blocks, plus a ragged tail.
SMALL_BLOCKS = kernels.KernelOptions(block_q=8, block_kv=8)


def reference_lse(q, k, v, valid_len=None):
  """Float64 attention and lse_BxHxS; fully masked rows give output 0 and lse -inf."""
  return attention_reference.reference(q, k, v, valid_len)


def _inputs(shape_q, shape_kv, dtype, seed=0):
  rng = np.random.default_rng(seed)
  q, k, v = (normal(rng, shape, dtype) for shape in (shape_q, shape_kv, shape_kv))
  return q, k, v, normal(rng, shape_q)


def _reference_grads(q, k, v, cotangent, valid_len):
  """Float64 gradients of sum(out * cotangent) through textbook softmax attention."""
  return attention_reference.reference(q, k, v, valid_len, cotangent)[2:]


def _max_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


CASES = [
    # (name, q shape, kv shape, kv_valid_len)
    ("mha", (2, 19, 4, 16), (2, 19, 4, 16), None),
    ("gqa", (1, 16, 4, 8), (1, 21, 2, 8), None),
    ("mqa_valid_int", (1, 13, 4, 8), (1, 24, 1, 8), 17),
    ("gqa_valid_traced", (2, 11, 6, 8), (2, 27, 3, 8), "traced"),
]


def _call(kernel, q, k, v, valid_len, lse=False):
  fn = kernels.local_attention_lse if lse else kernels.local_attention

  if valid_len == "traced":
    return jax.jit(lambda q, k, v, n: fn(q, k, v, kernel=kernel, kv_valid_len=n,
                                         options=SMALL_BLOCKS))(q, k, v, jnp.int32(9))
  return fn(q, k, v, kernel=kernel, kv_valid_len=valid_len, options=SMALL_BLOCKS)


# bf16 on two cases only: the tolerance, not the masking paths, is what bf16 adds.
DTYPE_CASES = [(c, jnp.float32) for c in CASES] + [(CASES[1], jnp.bfloat16), (CASES[3], jnp.bfloat16)]


@pytest.mark.parametrize("kernel", CPU_KERNELS)
@pytest.mark.parametrize("case,dtype", DTYPE_CASES,
                         ids=[f"{c[0]}-{jnp.dtype(d).name}" for c, d in DTYPE_CASES])
def test_values_and_grads_match_reference(kernel, dtype, case):
  _, shape_q, shape_kv, valid_len = case
  q, k, v, ct = _inputs(shape_q, shape_kv, dtype)
  ref_len = 9 if valid_len == "traced" else valid_len
  ref_out, _ = reference_lse(q, k, v, ref_len)

  out = jax.jit(lambda q, k, v: _call(kernel, q, k, v, valid_len))(q, k, v)
  assert out.dtype == dtype and out.shape == shape_q
  assert _max_err(out, ref_out) <= TOL[dtype]

  def loss(q, k, v):
    return jnp.sum(_call(kernel, q, k, v, valid_len).astype(jnp.float32) * ct)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  for got, want in zip(grads, _reference_grads(q, k, v, ct, ref_len)):
    assert _max_err(got, want) <= TOL[dtype]


@pytest.mark.parametrize("kernel", CPU_KERNELS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_lse_values_and_grads_match_reference(kernel, case):
  _, shape_q, shape_kv, valid_len = case
  q, k, v, ct = _inputs(shape_q, shape_kv, jnp.float32)
  b, s, h, _ = shape_q
  ct_lse = normal(np.random.default_rng(7), (b, h, s))
  ref_len = 9 if valid_len == "traced" else valid_len
  ref_out, ref_lse = reference_lse(q, k, v, ref_len)

  out, lse = jax.jit(lambda q, k, v: _call(kernel, q, k, v, valid_len, lse=True))(q, k, v)
  assert out.dtype == jnp.float32 and lse.dtype == jnp.float32 and lse.shape == (b, h, s)
  assert _max_err(out, ref_out) <= 1e-5
  assert _max_err(lse, ref_lse) <= 1e-5

  def loss(q, k, v):
    out, lse = _call(kernel, q, k, v, valid_len, lse=True)
    return jnp.sum(out * ct) + jnp.sum(lse * ct_lse)

  want = attention_reference.reference(q, k, v, ref_len, ct, ct_lse)[2:]
  for got, w in zip(jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v), want):
    assert _max_err(got, w) <= 1e-5


def _merge(out_a, lse_a, out_b, lse_b):
  """Log-sum-exp merge of two partial results, as ring attention does it."""
  lse = jnp.logaddexp(lse_a, lse_b)
  safe = jnp.where(jnp.isfinite(lse), lse, 0.0)
  w_a, w_b = (jnp.moveaxis(jnp.exp(x - safe), 1, 2)[..., None] for x in (lse_a, lse_b))
  return out_a * w_a + out_b * w_b, lse


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_fully_masked_block_merges_to_full_attention(kernel):
  q, k, v, ct = _inputs((1, 10, 4, 8), (1, 24, 2, 8), jnp.float32)
  ref_out, ref_lse = reference_lse(q, k, v, 16)

  def merged(q, k, v, count_b):
    # The second block holds keys 12.. with count_b of them valid; count_b == 0 masks it fully.
    first = kernels.local_attention_lse(q, k[:, :12], v[:, :12], kernel=kernel,
                                        kv_valid_len=jnp.int32(12), options=SMALL_BLOCKS)
    second = kernels.local_attention_lse(q, k[:, 12:], v[:, 12:], kernel=kernel,
                                         kv_valid_len=count_b, options=SMALL_BLOCKS)
    return _merge(*first, *second)

  out, lse = jax.jit(merged)(q, k, v, jnp.int32(4))
  assert _max_err(out, ref_out) <= 1e-5 and _max_err(lse, ref_lse) <= 1e-5

  empty_out, empty_lse = jax.jit(lambda q, k, v: kernels.local_attention_lse(
      q, k, v, kernel=kernel, kv_valid_len=jnp.int32(0), options=SMALL_BLOCKS))(q, k, v)
  assert np.all(np.asarray(empty_out) == 0.0) and np.all(np.asarray(empty_lse) == -np.inf)

  ref12_out, _ = reference_lse(q, k, v, 12)
  loss = lambda q, k, v: jnp.sum(merged(q, k, v, jnp.int32(0))[0] * ct)
  got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in got)
  assert np.all(np.asarray(got[1])[:, 12:] == 0.0) and np.all(np.asarray(got[2])[:, 12:] == 0.0)
  assert _max_err(jax.jit(merged)(q, k, v, jnp.int32(0))[0], ref12_out) <= 1e-5
  want = _reference_grads(q, k, v, ct, 12)
  for g, w in zip(got, want):
    assert _max_err(g, w) <= 1e-5


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_fully_masked_output_is_zero(kernel):
  q, k, v, _ = _inputs((1, 5, 2, 8), (1, 6, 2, 8), jnp.float32)
  out = kernels.local_attention(q, k, v, kernel=kernel, kv_valid_len=0, options=SMALL_BLOCKS)
  assert np.all(np.asarray(out) == 0.0)


def test_kernel_that_ran_is_logged_once_per_trace(caplog):
  caplog.set_level(logging.INFO)
  q, k, v, _ = _inputs((1, 6, 2, 8), (1, 6, 2, 8), jnp.float32)
  fn = jax.jit(lambda q, k, v: kernels.local_attention(q, k, v, kernel="blockwise"))
  fn(q, k, v)
  fn(q, k, v)
  messages = [r.getMessage() for r in caplog.records if "attention kernel" in r.getMessage()]
  assert messages == ["attention kernel blockwise ran on cpu: q (1, 6, 2, 8) float32, kv (1, 6, 2, 8)"]


def test_unknown_kernel_raises_naming_binding():
  q, k, v, _ = _inputs((1, 4, 2, 8), (1, 4, 2, 8), jnp.float32)
  with pytest.raises(ValueError, match=r"attention\.kernel='flash' is unknown; valid choices: "
                                       r"xla, blockwise, splash, cudnn"):
    kernels.local_attention(q, k, v, kernel="flash")


@pytest.mark.parametrize("kernel", ["splash", "cudnn"])
def test_unavailable_kernel_on_cpu_raises(kernel):
  q, k, v, _ = _inputs((1, 4, 2, 8), (1, 4, 2, 8), jnp.bfloat16)
  with pytest.raises(ValueError, match=rf"attention\.kernel='{kernel}' is not available on cpu; "
                                       r"available on cpu: xla, blockwise$"):
    kernels.local_attention(q, k, v, kernel=kernel)


def test_lse_of_kernel_without_lse_raises():
  q, k, v, _ = _inputs((1, 4, 2, 8), (1, 4, 2, 8), jnp.float32)
  with pytest.raises(ValueError, match=r"attention\.kernel='splash'"):
    kernels.local_attention_lse(q, k, v, kernel="splash")


def test_available_kernels():
  assert kernels.available_kernels("cpu") == ("xla", "blockwise")
  assert kernels.available_kernels("tpu") == ("xla", "blockwise", "splash")
  assert kernels.available_kernels("cuda") == ("xla", "blockwise", "cudnn")
  assert kernels.available_kernels("gpu") == ("xla", "blockwise", "cudnn")


def test_bad_valid_len_raises():
  q, k, v, _ = _inputs((1, 4, 2, 8), (1, 4, 2, 8), jnp.float32)
  with pytest.raises(ValueError, match=r"kv_valid_len=5 must lie in \[0, 4\]"):
    kernels.local_attention(q, k, v, kernel="xla", kv_valid_len=5)


@pytest.mark.parametrize("kernel,lse", [("xla", False), ("blockwise", False), ("blockwise", True)])
def test_inside_shard_map_with_replicated_kv(kernel, lse):
  # Cross-attention layout: q sequence-sharded, k/v replicated over 'context', vma checking on;
  # the k/v gradients must come back summed over the q shards.
  from harness import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  mesh = mesh_lib.make_mesh(data=2, context=4)
  q_spec, kv_spec = P("data", "context", None, None), P("data", None, None, None)
  q, k, v, ct = _inputs((2, 32, 4, 8), (2, 24, 2, 8), jnp.float32)
  fn = kernels.local_attention_lse if lse else kernels.local_attention

  def local(q, k, v):
    result = fn(q, k, v, kernel=kernel, kv_valid_len=20, options=SMALL_BLOCKS)
    return result[0] if lse else result

  attention = jax.shard_map(local, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec)
  assert _max_err(jax.jit(attention)(q, k, v), reference_lse(q, k, v, 20)[0]) <= 1e-5
  loss = lambda q, k, v: jnp.sum(attention(q, k, v) * ct)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  for got, want in zip(grads, _reference_grads(q, k, v, ct, 20)):
    assert _max_err(got, want) <= 1e-5


def _compiled_temp_bytes(fn, *shapes):
  return jax.jit(fn).lower(*shapes).compile().memory_analysis().temp_size_in_bytes


def test_blockwise_never_materialises_the_score_matrix():
  # 32k tokens x 8 heads x 128: one fp32 S x S score matrix is 4 GiB per head, 32 GiB for all heads
  # (the 'xla' kernel compiles to 64 GiB of temporaries forward). Measured on jax 0.10.2 CPU:
  # blockwise 406 MiB forward, 688 MiB forward+backward, i.e. O(seq) buffers plus 512x512 tiles.
  seq = 32 * 1024
  x = jax.ShapeDtypeStruct((1, seq, 8, 128), jnp.float32)
  score_matrix_bytes = seq * seq * 4
  fwd = lambda q, k, v: kernels.local_attention(q, k, v, kernel="blockwise")
  fwd_bwd = jax.grad(lambda q, k, v: jnp.sum(fwd(q, k, v)), argnums=(0, 1, 2))
  assert _compiled_temp_bytes(fwd, x, x, x) < score_matrix_bytes // 8
  assert _compiled_temp_bytes(fwd_bwd, x, x, x) < score_matrix_bytes // 4


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")
@pytest.mark.parametrize("case", CASES[1:], ids=[c[0] for c in CASES[1:]])
def test_cudnn_matches_reference(case):
  _, shape_q, shape_kv, valid_len = case
  q, k, v, ct = _inputs(shape_q, shape_kv, jnp.bfloat16)
  ref_len = 9 if valid_len == "traced" else valid_len
  out = jax.jit(lambda q, k, v: _call("cudnn", q, k, v, valid_len))(q, k, v)
  assert out.dtype == jnp.bfloat16 and _max_err(out, reference_lse(q, k, v, ref_len)[0]) <= 2e-2
  loss = lambda q, k, v: jnp.sum(_call("cudnn", q, k, v, valid_len).astype(jnp.float32) * ct)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  for got, want in zip(grads, _reference_grads(q, k, v, ct, ref_len)):
    assert _max_err(got, want) <= 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")
def test_cudnn_rejects_float32():
  q, k, v, _ = _inputs((1, 16, 2, 64), (1, 16, 2, 64), jnp.float32)
  with pytest.raises(ValueError, match=r"attention\.kernel='cudnn' needs bfloat16 or float16 inputs"):
    kernels.local_attention(q, k, v, kernel="cudnn")


def test_blockwise_bad_block_size_raises():
  q, k, v, _ = _inputs((1, 4, 2, 8), (1, 4, 2, 8), jnp.float32)
  with pytest.raises(ValueError, match=r"attention\.block_q / attention\.block_kv must be positive, "
                                       r"got 0, 512"):
    kernels.local_attention(q, k, v, kernel="blockwise", options=kernels.KernelOptions(block_q=0))
