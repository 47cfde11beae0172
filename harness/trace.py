"""`python -m harness.trace`: the name the docs use for `python -m harness.profiling`."""
import sys

from harness.profiling.cli import main as _cli_main


def main(argv: list[str] | None = None) -> int:
  """The profiling CLI under this module's name."""
  return _cli_main(argv, prog="python -m harness.trace")


if __name__ == "__main__":
  sys.exit(main())
