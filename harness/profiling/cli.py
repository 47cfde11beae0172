"""`python -m harness.profiling RUN_DIR_OR_XPLANE`: overlap table of the newest capture."""
from __future__ import annotations

import argparse
import json
import sys

from harness.profiling.analysis import analyze
from harness.profiling.table import format_table
from harness.profiling.xspace import TraceError


def main(argv: list[str] | None = None, prog: str = "python -m harness.profiling") -> int:
  """Prints the table (or JSON) of a capture; 2 with a one-line error for an unreadable one."""
  parser = argparse.ArgumentParser(
      prog=prog,
      description="Collective/compute/exposed time per step from a profiler capture.")
  parser.add_argument("path", help="run dir, tensorboard dir, capture dir or .xplane.pb file")
  parser.add_argument("--hlo", help="compiled HLO text of the step, for the attention share")
  parser.add_argument("--json", action="store_true", help="print the full result as JSON")
  args = parser.parse_args(argv)
  try:
    hlo_text = open(args.hlo).read() if args.hlo else None
    result = analyze(args.path, hlo_text=hlo_text)
  except (TraceError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result, indent=1, sort_keys=True) if args.json else format_table(result))
  return 0
