"""`python -m harness --gin_file=... [--gin_bindings=...] [--dry_run]`."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys

_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
if __name__ == "__main__":
  # Importing the harness logs (orbax, through absl), and absl gives the root logger Python's
  # default handler when it has none: the command's own format goes on first.
  logging.basicConfig(format=_LOG_FORMAT)

# pylint: disable=wrong-import-position
from harness import run  # noqa: E402
from harness.errors import UserError  # noqa: E402
from harness.execute import PeerFailure  # noqa: E402
from harness.phases import NanError  # noqa: E402

# Write errors that are the machine's or the user's, not a bug: one line, no traceback.
_IO_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM)


def parse_flags(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m harness",
      description="Run a WAN-style DiT with context-parallel attention, configured by gin.",
      epilog="Example: python -m harness --gin_file=gin/quickstart.gin "
             "--gin_bindings=\"attention.num_chunks=1\"")
  parser.add_argument("--gin_file", action="append", default=[],
                      help="gin file (repeatable; later files override earlier ones); looked up "
                           "as given, under --gin_search_paths, the repo root and gin/")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="one gin binding such as \"run.steps=50\" (repeatable; applied after "
                           "the files)")
  parser.add_argument("--gin_search_paths", action="append", default=[],
                      help="extra folder to look up gin files and includes in (repeatable)")
  parser.add_argument("--dry_run", action="store_true",
                      help="parse, build shapes with jax.eval_shape, print the resolved config, "
                           "parameter count, FLOPs and memory estimate; allocate nothing")
  parser.add_argument("--verbose", action="store_true", help="log at INFO level")
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  flags = parse_flags(sys.argv[1:] if argv is None else argv)
  level = logging.INFO if flags.verbose else logging.WARNING
  if __name__ == "__main__":
    logging.getLogger().setLevel(level)  # the handler went on before the imports
  else:
    logging.basicConfig(level=level, format=_LOG_FORMAT)  # a caller's own handlers stay
  if not flags.gin_file and not flags.gin_bindings:
    print("error: give at least one --gin_file (e.g. --gin_file=gin/quickstart.gin)",
          file=sys.stderr)
    return 2
  try:
    run.main(flags.gin_file, flags.gin_bindings, flags.gin_search_paths, flags.dry_run)
  except NanError as err:
    print(f"error: {err}", file=sys.stderr)
    return 3
  except PeerFailure as err:
    # Exit at once: with a peer gone, JAX's shutdown barrier at exit would abort.
    sys.stdout.flush()
    print(f"error: {err}", file=sys.stderr, flush=True)
    os._exit(4)  # pylint: disable=protected-access
  except OSError as err:
    if err.errno not in _IO_ERRORS:
      raise
    print(f"error: cannot write {err.filename or 'the run folder'}: {err.strerror}",
          file=sys.stderr)
    return 2
  except UserError as err:  # user mistakes: one line, no traceback (a bug keeps its traceback)
    # gin appends "In call to configurable ..." on further lines; the first line says it all.
    print(f"error: {(str(err).splitlines() or [type(err).__name__])[0]}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
