"""Wall times a user feels: the cold quickstart, and the full test suite.

    python experiments/bench_wall.py [--skip_tests] [--out F.json]

'Cold' = a fresh process, a fresh output folder and no compilation cache. Each command runs
once (they take a minute and several minutes); the figures are single measurements.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from harness import benchmark

REPO = pathlib.Path(__file__).resolve().parent.parent


def timed(cmd: list[str], cwd: pathlib.Path, env: dict) -> float:
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
  elapsed = time.perf_counter() - start
  if proc.returncode != 0:
    raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
  return elapsed


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--skip_tests", action="store_true")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE",
                                                                  "XLA_FLAGS"))}
  result = {}
  with tempfile.TemporaryDirectory() as tmp:
    result["quickstart_cold_s"] = timed(
        [sys.executable, "-m", "harness", "--gin_file=gin/quickstart.gin",
         f"--gin_bindings=run.output_dir={tmp!r}"], REPO, env)
  if not args.skip_tests:
    result["test_suite_s"] = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                                   REPO, env)
  return benchmark.emit(result, args.out)


if __name__ == "__main__":
  main()
