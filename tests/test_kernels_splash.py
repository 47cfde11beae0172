"""Splash attention: numerics in Pallas interpret mode on CPU, and a real TPU compile ahead of time."""
import os
import re

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from harness import mesh as mesh_lib
from harness.attention import kernels, splash
import attention_reference
from attention_reference import normal
from test_kernels import _inputs, _max_err, _reference_grads, reference_lse

# libtpu guards itself with a machine-wide lock file; AOT compiles in parallel processes need this.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

# 128 is the smallest block splash accepts; the sequences below pad to two q and kv blocks.
OPTIONS = kernels.KernelOptions(block_q=128, block_kv=128)
FUSED = kernels.KernelOptions(block_q=128, block_kv=128, use_fused_bwd_kernel=True)
CASES = [
    # (name, q shape, kv shape, kv_valid_len, dtype, options)
    ("gqa_valid_int", (1, 150, 4, 64), (1, 200, 2, 64), 170, jnp.float32, OPTIONS),
    ("mqa_fused_bwd", (1, 100, 2, 128), (1, 130, 1, 128), None, jnp.float32, FUSED),
    ("mha_valid_traced_bf16", (1, 129, 2, 64), (1, 140, 2, 64), "traced", jnp.bfloat16, OPTIONS),
]
TOL = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}
_TPU_KERNEL_CALL = 'custom_call_target="tpu_custom_call"'
_COST_ESTIMATE = re.compile(r'"cost_estimate":\{"flops":"(\d+)","transcendentals":"(\d+)"')


def _cost_estimates(text: str) -> list[tuple[int, int]]:
  """(flops, transcendentals) of each Pallas kernel call's cost estimate in a compiled module."""
  return [(int(f), int(t)) for f, t in _COST_ESTIMATE.findall(text)]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_splash_interpreted_matches_reference(case):
  _, shape_q, shape_kv, valid_len, dtype, options = case
  q, k, v, ct = _inputs(shape_q, shape_kv, dtype)
  ref_len = 131 if valid_len == "traced" else valid_len

  def run(q, k, v, n):
    return splash.splash_attention(q, k, v, n if valid_len == "traced" else valid_len, options,
                                   interpret=True)

  out = jax.jit(run)(q, k, v, jnp.int32(131))
  assert out.dtype == dtype and out.shape == shape_q
  assert _max_err(out, reference_lse(q, k, v, ref_len)[0]) <= TOL[dtype]
  loss = lambda q, k, v, n: jnp.sum(run(q, k, v, n).astype(jnp.float32) * ct)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v, jnp.int32(131))
  for got, want in zip(grads, _reference_grads(q, k, v, ct, ref_len)):
    assert _max_err(got, want) <= TOL[dtype]


def test_splash_interpreted_fully_masked_is_zero():
  q, k, v, _ = _inputs((1, 20, 2, 64), (1, 30, 2, 64), jnp.float32)
  out = jax.jit(lambda q, k, v: splash.splash_attention(q, k, v, jnp.int32(0), OPTIONS,
                                                        interpret=True))(q, k, v)
  assert np.all(np.asarray(out) == 0.0)


def test_splash_bad_block_size_raises():
  q, k, v, _ = _inputs((1, 20, 2, 64), (1, 30, 2, 64), jnp.float32)
  with pytest.raises(ValueError, match=r"attention\.block_kv=100 must be a positive multiple of 128"):
    splash.splash_attention(q, k, v, None, kernels.KernelOptions(block_kv=100), interpret=True)


@pytest.fixture(scope="module")
def tpu_mesh():
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  devices = topologies.get_topology_desc(platform="tpu", topology_name="v5p:2x2x2").devices
  return mesh_lib.make_mesh(context=8, devices=devices)


def _compile_for_tpu(mesh, attention, kv_heads, dtype=jnp.bfloat16, out_specs=None):
  """AOT-compiles attention on sequence shards of (2, 8 x 320, 8, 128) q inside shard_map."""
  spec = P("data", "context", None, None)
  sharding = NamedSharding(mesh, spec)
  q = jax.ShapeDtypeStruct((2, 8 * 320, 8, 128), dtype, sharding=sharding)
  kv = jax.ShapeDtypeStruct((2, 8 * 320, kv_heads, 128), dtype, sharding=sharding)
  # Pallas calls declare no varying mesh axes for their outputs, so vma checking must be off.
  step = jax.shard_map(attention, mesh=mesh, in_specs=(spec, spec, spec), out_specs=out_specs or spec,
                       check_vma=False)
  return jax.jit(step).lower(q, kv, kv).compile()


@pytest.mark.parametrize("kv_heads", [8, 2, 1], ids=["mha", "gqa", "mqa"])
def test_splash_compiles_for_tpu(tpu_mesh, kv_heads):
  def attention(q, k, v):
    # 320 local keys pad to 384 and, with kv_valid_len, exercise the segment-id mask.
    return kernels.local_attention(q, k, v, kernel="splash", kv_valid_len=300,
                                   options=kernels.KernelOptions(block_q=128, block_kv=128))

  text = _compile_for_tpu(tpu_mesh, attention, kv_heads).as_text()
  assert text.count(_TPU_KERNEL_CALL) == 1
  # The kernel tells XLA's scheduler its cost (splash_cost.py): per device 2 batch x 8 q heads,
  # 384 x 384 padded logits, QK^T and PV at 2 FLOPs a multiply-add, one exp a logit.
  logits = 2 * 8 * 384 * 384
  assert _cost_estimates(text) == [(logits * 4 * 128, logits)]


@pytest.mark.parametrize("fused,kernel_calls", [(False, 3), (True, 2)], ids=["dq_apart", "fused"])
def test_splash_backward_compiles_for_tpu(tpu_mesh, fused, kernel_calls):
  options = kernels.KernelOptions(use_fused_bwd_kernel=fused)

  def attention(q, k, v):
    def loss(q, k, v):
      out = kernels.local_attention(q, k, v, kernel="splash", options=options)
      return jnp.sum(out.astype(jnp.float32))
    return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

  spec = P("data", "context", None, None)
  text = _compile_for_tpu(tpu_mesh, attention, 2, out_specs=(spec, spec, spec)).as_text()
  # Forward, then either dq and dk/dv kernels or one fused backward kernel.
  assert text.count(_TPU_KERNEL_CALL) == kernel_calls


def test_splash_under_vma_checking_raises(tpu_mesh):
  spec = P("data", "context", None, None)
  q = jax.ShapeDtypeStruct((2, 8 * 128, 8, 128), jnp.bfloat16, sharding=NamedSharding(tpu_mesh, spec))
  step = jax.shard_map(lambda q, k, v: kernels.local_attention(q, k, v, kernel="splash"),
                       mesh=tpu_mesh, in_specs=(spec, spec, spec), out_specs=spec)
  with pytest.raises(ValueError, match=r"(?m)attention\.kernel='splash' must run inside "
                                       r"jax\.shard_map\(\.\.\., check_vma=False\); "):
    jax.jit(step).lower(q, q, q)


@pytest.mark.parametrize("num_chunks", [1, 2])
def test_ulysses_ring_splash_compiles_for_tpu(tpu_mesh, num_chunks):
  from harness.attention import context_parallel_attention  # pylint: disable=g-import-not-at-top
  spec = NamedSharding(tpu_mesh, P(("data", "fsdp"), "context"))
  x = jax.ShapeDtypeStruct((2, 8 * 320, 8, 128), jnp.bfloat16, sharding=spec)
  attend = lambda q, k, v: context_parallel_attention(
      q, k, v, mesh=tpu_mesh, variant="ulysses_ring", ulysses_degree=4, num_chunks=num_chunks,
      kernel="splash", kernel_options=kernels.KernelOptions(block_q=128, block_kv=128))
  loss = lambda q, k, v: jnp.sum(attend(q, k, v).astype(jnp.float32))
  forward = jax.jit(attend).lower(x, x, x).compile().as_text()
  backward = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, x, x).compile().as_text()
  # Ring of 2 inside each head group: 2 forward kernels a group; the backward adds dq and dkv.
  assert forward.count(_TPU_KERNEL_CALL) == 2 * num_chunks
  assert backward.count(_TPU_KERNEL_CALL) == 6 * num_chunks
  # Every kernel, the log-sum-exp path's backward included, carries a cost estimate.
  assert len(_cost_estimates(forward)) == 2 * num_chunks
  assert len(_cost_estimates(backward)) == 6 * num_chunks


def test_cudnn_unavailable_on_tpu(tpu_mesh):
  def attention(q, k, v):
    return kernels.local_attention(q, k, v, kernel="cudnn")

  with pytest.raises(ValueError, match=r"(?m)attention\.kernel='cudnn' is not available on tpu; "
                                       r"available on tpu: xla, blockwise, splash$"):
    _compile_for_tpu(tpu_mesh, attention, 8)


def test_splash_lse_interpreted_matches_reference_with_lse_gradients():
  q, k, v, ct = _inputs((1, 150, 4, 64), (1, 200, 2, 64), jnp.float32)
  ct_lse = normal(np.random.default_rng(7), (1, 4, 150))
  run = lambda q, k, v: splash.splash_attention_lse(q, k, v, 170, OPTIONS, interpret=True)
  out, lse = jax.jit(run)(q, k, v)
  want_out, want_lse = reference_lse(q, k, v, 170)
  assert _max_err(out, want_out) <= 1e-5 and _max_err(lse, want_lse) <= 1e-5

  def loss(q, k, v):
    out, lse = run(q, k, v)
    return jnp.sum(out * ct) + jnp.sum(lse * ct_lse)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  want = attention_reference.reference(q, k, v, 170, ct, ct_lse)[2:]
  for got, ref in zip(grads, want):
    assert _max_err(got, ref) <= 1e-5


RING_CASES = [
    # (dtype, extra arguments): a masked tail that empties part of the second ring block.
    (jnp.float32, dict(num_chunks=1)),
    (jnp.float32, dict(num_chunks=2, kv_valid_len=150)),
    (jnp.bfloat16, dict(num_chunks=2, packed_qkv=True)),
]


@pytest.mark.parametrize("dtype,extra", RING_CASES)
def test_ulysses_ring_splash_interpreted_matches_reference(dtype, extra):
  from test_attention_equivalence import (make_inputs, max_abs_errors, mesh_of,
                                          reference_value_and_grads, value_and_grads)
  mesh = mesh_of(4)
  q, k, v, ct = make_inputs(8, 8, 200, dtype=dtype)
  options = kernels.KernelOptions(block_q=128, block_kv=128, interpret=True)
  got = value_and_grads(q, k, v, ct, mesh=mesh, variant="ulysses_ring", ulysses_degree=2,
                        kernel="splash", kernel_options=options, **extra)
  want = reference_value_and_grads(q, k, v, ct, extra.get("kv_valid_len"))
  assert max(max_abs_errors(got, want)) <= TOL[dtype]
