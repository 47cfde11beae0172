"""Context-parallel attention: dense reference, Ulysses (single-shot / head-chunked), ring, both."""
from harness.attention.api import context_parallel_attention
from harness.attention.api import planned_attention
from harness.attention.cross import cross_attention
from harness.attention.planner import plan_attention
from harness.attention.planner import validate
from harness.attention.variants import VARIANTS

__all__ = ["VARIANTS", "context_parallel_attention", "cross_attention", "plan_attention",
           "planned_attention", "validate"]
