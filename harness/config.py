"""Old name of harness.gin_config for modules not yet moved to it (harness/summary.py)."""
from harness.gin_config import operative_config  # noqa: F401
