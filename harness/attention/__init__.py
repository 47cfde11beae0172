"""Context-parallel attention: dense reference, Ulysses (single-shot / head-chunked), ring, both."""
from harness.attention.api import VARIANTS
from harness.attention.api import context_parallel_attention
from harness.attention.api import validate
from harness.attention.cross import cross_attention

__all__ = ["VARIANTS", "context_parallel_attention", "cross_attention", "validate"]
