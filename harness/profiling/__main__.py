"""`python -m harness.profiling`: the trace CLI."""
import sys

from harness.profiling.cli import main

if __name__ == "__main__":
  sys.exit(main())
