"""Old name of harness.gin_config, kept while harness/summary.py imports it; use gin_config."""
from harness.gin_config import operative_config

__all__ = ["operative_config"]
