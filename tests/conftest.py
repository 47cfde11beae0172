"""Test set-up: 8 simulated CPU devices, configured before JAX is imported anywhere."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# AOT tests load libtpu (for TPU topologies); parallel processes must not trip on its lock file.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

# One persistent compilation cache for the session (this process, the xdist workers it starts, which
# inherit its environment, and the harness subprocesses the tests start): the quickstart's step is
# compiled once instead of in every test that runs it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import atexit
  import shutil
  import tempfile
  _cache = tempfile.mkdtemp(prefix="harness-test-jax-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import gin  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _clear_gin():
  """Each test starts from an empty gin config."""
  gin.clear_config()
  yield
  gin.clear_config()


# The costliest test files, costliest first (CPU seconds measured under `-n 2`). Workers take files
# in collection order, so starting these first lets the two workers finish together; the order
# never changes what a test checks.
HEAVY_FIRST = ("test_documented_commands.py", "test_kernels.py", "test_attention_equivalence.py",
               "test_run_integrity_processes.py", "test_reliability_runs.py",
               "test_attention_variants.py", "test_reliability_multihost.py",
               "test_aot_compile.py", "test_run_recovery.py", "test_train.py",
               "test_kernels_splash.py", "test_pipelined_projections.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
