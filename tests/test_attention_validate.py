"""Head-group rules and the one-line errors for every invalid attention configuration."""
import jax
import jax.numpy as jnp
import pytest

from harness.attention import context_parallel_attention
from harness.attention import cross_attention
from harness.attention import heads
from harness.attention import validate
from harness.attention import VARIANTS
from harness.mesh import make_mesh


def test_variants_are_the_gin_choices():
  assert VARIANTS == ("dense", "ulysses", "ring", "ulysses_ring", "gspmd_heads", "all_gather")


def test_uneven_chunks_are_multiples_of_the_degree_larger_first():
  assert heads.chunk_ranges(40, 4, 3) == ((0, 16), (16, 28), (28, 40))
  assert heads.chunk_ranges(12, 2, 5) == ((0, 4), (4, 6), (6, 8), (8, 10), (10, 12))
  assert heads.chunk_ranges(16, 8, 1) == ((0, 16),)


def test_remainder_last_sizing_is_maxdiffusions():
  # maxdiffusion #428 (_ulysses_head_chunk_ranges): floor-sized chunks, the remainder last.
  assert heads.chunk_ranges(40, 8, 2, "remainder_last") == ((0, 16), (16, 40))
  assert heads.chunk_ranges(40, 8, 3, "remainder_last") == ((0, 8), (8, 16), (16, 40))
  assert heads.chunk_ranges(40, 8, 4, "remainder_last") == ((0, 8), (8, 16), (16, 24), (24, 40))
  assert heads.chunk_ranges(40, 8, 5, "remainder_last") == heads.chunk_ranges(40, 8, 5)
  assert heads.chunk_ranges(40, 8, 2) == ((0, 24), (24, 40))


def test_chunk_sizing_reaches_the_plan():
  plan = validate(heads=40, kv_heads=40, context=8, num_chunks=3, chunk_sizing="remainder_last")
  assert plan.ranges == ((0, 8), (8, 16), (16, 40))


def test_bad_chunk_sizing_is_one_line():
  with pytest.raises(ValueError, match=r"^attention.chunk_sizing='last' is invalid; valid "
                     r"choices: 'larger_first', 'remainder_last'$"):
    validate(heads=40, kv_heads=40, context=8, num_chunks=2, chunk_sizing="last")


def test_padding_rounds_heads_up_to_the_degree():
  plan = validate(heads=12, kv_heads=12, context=8, num_chunks=2, pad_heads=True)
  assert (plan.padded_heads, plan.ranges) == (16, ((0, 8), (8, 16)))


def test_mha_sends_each_kv_head_once():
  plan = heads.plan_heads(16, 16, 4, 2)
  assert [(c.group, c.kv_index) for c in plan.chunks] == [
      (1, tuple(range(8))), (1, tuple(range(8, 16)))]
  assert not plan.kv_replicated


def test_gqa_sends_one_kv_head_per_device_group():
  # 16 heads, 2 kv heads (groups of 8), degree 2: each device's 4 q heads share one kv head.
  plan = heads.plan_heads(16, 2, 2, 2)
  assert [(c.kv_per_device, c.group, c.kv_index) for c in plan.chunks] == [
      (1, 4, (0, 0)), (1, 4, (1, 1))]


def test_mqa_below_the_degree_replicates_the_kv_head():
  plan = heads.plan_heads(8, 1, 8, 1)
  assert plan.chunks[0].kv_index == (0,) * 8 and plan.kv_replicated


def test_group_split_across_devices_sends_one_kv_head_per_q_head():
  # Device 6 of chunk 0 holds q heads 18..20, which straddle kv groups 0 and 1.
  chunk = heads.plan_heads(40, 2, 8, 2).chunks[0]
  assert (chunk.kv_per_device, chunk.group) == (3, 1)


@pytest.mark.parametrize("kwargs,message", [
    (dict(variant="flash"), "attention.variant='flash' is invalid; valid choices: 'dense', "
                            "'ulysses', 'ring', 'ulysses_ring', 'gspmd_heads', "
                            "'all_gather'"),
    (dict(kernel="fast"), "attention.kernel='fast' is invalid; valid choices: 'xla', "
                          "'blockwise', 'splash', 'cudnn'"),
    (dict(kernel="splash", platform="cpu"), "attention.kernel='splash' is invalid on cpu; "
                                            "valid choices: 'xla', 'blockwise'"),
    (dict(num_chunks=0), "attention.num_chunks=0 must be a positive integer"),
    (dict(num_chunks=3), "attention.num_chunks=3 cannot split 8 heads into groups of multiples "
                         "of mesh.context=4: valid choices 1..2"),
    (dict(heads=12, kv_heads=12, context=8),
     "heads=12 is not a multiple of the Ulysses degree mesh.context=8: set attention.pad_heads="
     "True (then attention.num_chunks in 1..2) or use mesh.context in (1, 2, 3, 4, 6, 12)"),
    (dict(heads=12, kv_heads=12, context=8, num_chunks=3, pad_heads=True),
     "attention.num_chunks=3 cannot split 12 heads into groups of multiples of mesh.context=8: "
     "valid choices 1..2"),
    (dict(kv_heads=3), "kv_heads=3 must divide heads=8 (GQA/MQA)"),
    (dict(variant="ring", num_chunks=2), "attention.num_chunks=2 needs attention.variant in "
                                         "('ulysses', 'ulysses_ring'); variant 'ring' takes "
                                         "attention.num_chunks=1"),
    (dict(variant="ring", kernel="cudnn"), "attention.kernel='cudnn' is invalid for variant "
                                           "'ring' (it merges log-sum-exps); valid choices: "
                                           "'xla', 'blockwise', 'splash'"),
    (dict(variant="ring", ulysses_degree=2), "attention.ulysses_degree=2 needs attention.variant "
                                             "in ('ulysses', 'ulysses_ring'); valid choice for "
                                             "'ring': None"),
    (dict(variant="dense", kernel="blockwise"), "attention.kernel='blockwise' is invalid for "
                                                "variant 'dense' (the plain reference); valid "
                                                "choices: 'xla'"),
    (dict(variant="dense", packed_qkv=True), "attention.packed_qkv=True needs attention.variant "
                                             "in ('ulysses', 'ring', 'ulysses_ring'); variant "
                                             "'dense' sends nothing"),
    (dict(variant="gspmd_heads", packed_qkv=True), "attention.packed_qkv=True needs "
                                                   "attention.variant in ('ulysses', 'ring', "
                                                   "'ulysses_ring', 'all_gather'); variant "
                                                   "'gspmd_heads' leaves sends to XLA"),
    (dict(variant="gspmd_heads", heads=12, kv_heads=12, context=8),
     "heads=12 is not a multiple of the Ulysses degree mesh.context=8: set attention.pad_heads="
     "True (then attention.num_chunks in 1..2) or use mesh.context in (1, 2, 3, 4, 6, 12)"),
    (dict(variant="all_gather", num_chunks=2), "attention.num_chunks=2 needs attention.variant "
                                               "in ('ulysses', 'ulysses_ring'); variant "
                                               "'all_gather' takes attention.num_chunks=1"),
    (dict(variant="gspmd_heads", ulysses_degree=2), "attention.ulysses_degree=2 needs "
                                                    "attention.variant in ('ulysses', "
                                                    "'ulysses_ring'); valid choice for "
                                                    "'gspmd_heads': None"),
    (dict(variant="ulysses", ulysses_degree=2), "attention.ulysses_degree=2 is invalid for "
                                                "variant 'ulysses' (it uses mesh.context=4); "
                                                "valid choices: None, 4"),
    (dict(variant="ulysses_ring"), "attention.ulysses_degree=None is invalid for variant "
                                   "'ulysses_ring' (a divisor of mesh.context=4); valid "
                                   "choices: 1, 2, 4"),
    (dict(variant="ulysses_ring", ulysses_degree=3), "attention.ulysses_degree=3 is invalid for "
                                                     "variant 'ulysses_ring' (a divisor of "
                                                     "mesh.context=4); valid choices: 1, 2, 4"),
    (dict(variant="ulysses_ring", ulysses_degree=2, num_chunks=5),
     "attention.num_chunks=5 cannot split 8 heads into groups of multiples of "
     "attention.ulysses_degree=2: valid choices 1..4"),
    (dict(variant="ulysses_ring", ulysses_degree=4, heads=6, kv_heads=6),
     "heads=6 is not a multiple of the Ulysses degree attention.ulysses_degree=4: set "
     "attention.pad_heads=True (then attention.num_chunks in 1..2) or use "
     "attention.ulysses_degree in (1, 2, 3, 6)"),
    (dict(variant="ulysses_ring", ulysses_degree=2, kernel="cudnn"),
     "attention.kernel='cudnn' is invalid for variant 'ulysses_ring' (it merges log-sum-exps); "
     "valid choices: 'xla', 'blockwise', 'splash'"),
])
def test_invalid_configuration_raises_one_line(kwargs, message):
  config = dict(heads=8, kv_heads=8, context=4) | kwargs
  with pytest.raises(ValueError) as error:
    validate(**config)
  assert str(error.value) == message


def test_valid_configurations_pass():
  assert validate(heads=8, kv_heads=1, context=4, num_chunks=2).ranges == ((0, 4), (4, 8))
  assert validate(heads=8, kv_heads=2, context=4, variant="ring", packed_qkv=True) is None
  assert validate(heads=8, kv_heads=8, context=8, variant="ulysses_ring", ulysses_degree=2,
                  num_chunks=4, kernel="blockwise").ranges == ((0, 2), (2, 4), (4, 6), (6, 8))


def test_attention_call_checks_before_tracing_collectives():
  mesh = make_mesh(context=8)
  q = jnp.zeros((1, 8, 12, 8))
  with pytest.raises(ValueError, match=r"^heads=12 is not a multiple of the Ulysses degree"):
    context_parallel_attention(q, q, q, mesh=mesh, num_chunks=2)


def test_batch_must_split_over_data_and_fsdp():
  mesh = make_mesh(data=2, context=4)
  q = jnp.zeros((3, 8, 8, 8))
  with pytest.raises(ValueError, match=r"^batch=3 must be a multiple of mesh.data\*mesh.fsdp=2$"):
    context_parallel_attention(q, q, q, mesh=mesh)


def test_mismatched_shapes_raise():
  mesh = make_mesh(context=4, devices=jax.devices()[:4])
  q, k = jnp.zeros((1, 8, 8, 8)), jnp.zeros((1, 8, 8, 4))
  with pytest.raises(ValueError, match="need equal batch and head_dim"):
    context_parallel_attention(q, k, k, mesh=mesh)


def test_cross_attention_rejects_unknown_kernel():
  mesh = make_mesh(context=4, devices=jax.devices()[:4])
  q = jnp.zeros((1, 8, 8, 8))
  with pytest.raises(ValueError, match=r"^attention.kernel='fast' is unknown"):
    cross_attention(q, q, q, mesh=mesh, kernel="fast")
