"""Collective counts, named scopes and temp memory read from compiled HLO of one attention call."""
import logging

import jax
import jax.numpy as jnp
import pytest

from harness.attention import context_parallel_attention
from harness.attention import heads
from harness.attention import ring
from harness.attention import ulysses
from test_attention_equivalence import mesh_of


def compiled(context, heads_, kv_heads, seq=32, grad=False, **kwargs):
  mesh = mesh_of(context)
  q = jax.ShapeDtypeStruct((1, seq, heads_, 8), jnp.float32)
  kv = jax.ShapeDtypeStruct((1, seq, kv_heads, 8), jnp.float32)
  fn = lambda q, k, v: context_parallel_attention(q, k, v, mesh=mesh, **kwargs)
  if not grad:
    return jax.jit(fn).lower(q, kv, kv).compile()
  # A cotangent input keeps the forward output and the backward's first all-to-all alive.
  loss = lambda q, k, v, ct: jnp.sum(fn(q, k, v) * ct)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(q, kv, kv, q).compile()


def count(executable, op: str) -> int:
  return executable.as_text().count(f" {op}(")


@pytest.mark.parametrize("heads_,kv_heads,context,num_chunks,packed,want", [
    (8, 8, 4, 1, False, 4),
    (8, 8, 4, 2, False, 8),
    (12, 12, 2, 3, False, 12),
    (8, 8, 4, 2, True, 4),     # q, k, v stacked: one all-to-all in, one out.
    (16, 2, 2, 2, True, 6),    # GQA with shared kv heads: q apart, k and v stacked.
])
def test_ulysses_all_to_all_count(heads_, kv_heads, context, num_chunks, packed, want):
  executable = compiled(context, heads_, kv_heads, num_chunks=num_chunks, packed_qkv=packed)
  plan = heads.plan_heads(heads_, kv_heads, context, num_chunks)
  assert sum(ulysses.all_to_alls_per_chunk(plan, packed)) == want
  assert count(executable, "all-to-all") == want
  assert count(executable, "collective-permute") == 0


def test_ulysses_backward_mirrors_forward_all_to_alls():
  assert count(compiled(4, 8, 8, grad=True, num_chunks=2), "all-to-all") == 16


@pytest.mark.parametrize("context,packed,want", [(4, False, 6), (4, True, 3), (2, False, 2)])
def test_ring_collective_permute_count(context, packed, want):
  executable = compiled(context, 4, 4, variant="ring", packed_qkv=packed)
  assert ring.collective_permutes(context, packed) == want
  assert count(executable, "collective-permute") == want
  assert count(executable, "all-to-all") == 0


def test_ulysses_ring_counts_per_chunk():
  # context 8 = ring 4 x ulysses 2; per chunk 4 all-to-alls and 2 * (4 - 1) permutes.
  executable = compiled(8, 8, 8, variant="ulysses_ring", ulysses_degree=2, num_chunks=2)
  assert (count(executable, "all-to-all"), count(executable, "collective-permute")) == (8, 12)


def test_dense_sends_nothing_explicitly():
  executable = compiled(4, 8, 8, variant="dense")
  assert count(executable, "all-to-all") == 0


def test_named_scopes_tell_chunks_apart():
  text = compiled(4, 8, 8, num_chunks=2).as_text()
  for scope in ("ulysses_chunk0/all_to_all_q", "ulysses_chunk1/all_to_all_v",
                "ulysses_chunk1/all_to_all_out", "ulysses_chunk0/attention"):
    assert scope in text, scope


def test_chunked_temp_memory_not_above_single_shot():
  temp = {c: compiled(4, 16, 16, seq=128, grad=True, num_chunks=c).memory_analysis()
          .temp_size_in_bytes for c in (1, 4)}
  assert temp[4] <= temp[1], temp


def test_plan_is_logged_once_per_trace(caplog):
  caplog.set_level(logging.INFO)
  compiled(4, 12, 12, num_chunks=2)
  plans = [r.getMessage() for r in caplog.records if r.getMessage().startswith("attention ulysses")]
  assert plans == ["attention ulysses kernel=xla degree=4 heads=12 (padded 12) kv_heads=12 "
                   "chunks=[(0, 8), (8, 12)] kv/device=[2, 1]"]
