"""What a result depends on: package versions, git commit, flags, devices."""
from __future__ import annotations

import importlib.metadata
import os
import subprocess

from harness.gin_config import REPO_ROOT


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def git_commit() -> str | None:
  """The harness's commit (with '+dirty' when the tree has changes), if it is a git checkout."""
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=5, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=5).stdout
    return commit + ("+dirty" if dirty.strip() else "")
  except (OSError, subprocess.SubprocessError):
    return None


def environment() -> dict:
  return {
      "versions": {p: _version(p) for p in ("jax", "jaxlib", "libtpu", "flax", "optax",
                                            "orbax-checkpoint")},
      "git_commit": git_commit(),
      "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
      "LIBTPU_INIT_ARGS": os.environ.get("LIBTPU_INIT_ARGS", ""),
  }
