"""Hold back libtpu's known-harmless CPU-host messages; re-emit everything else on stderr."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

# libtpu writes these from C++ (file descriptor 2) when it loads on a machine that is not a TPU VM:
# it looks for the TPU's own metadata, which a CPU host cannot have, and AOT compiles need none.
_HARMLESS_HEADS = (
    re.compile(r"could not determine TPU (accelerator type|worker hostnames)"),
    re.compile(r"^WARNING: Logging before InitGoogle\(\) is written to STDERR$"),
    re.compile(r"^E0000 .*unexpected worker hostname"),
)
# Lines that belong to the message above them (absl's source trace of the worker-hostname error).
_CONTINUATION = re.compile(r"^(=== Source Location Trace: ===|[\w./-]+\.cc:\d+)$")


def is_harmless(line: str) -> bool:
  """Whether a line starts one of libtpu's known-harmless CPU-host messages."""
  return any(p.search(line) for p in _HARMLESS_HEADS)


def drop_harmless(text: str) -> str:
  """`text` without the harmless messages and their source-trace lines; other lines kept in order."""
  kept, dropping = [], False
  for line in text.splitlines(keepends=True):
    bare = line.rstrip("\r\n")
    if is_harmless(bare):
      dropping = True
    elif not (dropping and _CONTINUATION.match(bare)):
      dropping = False
      kept.append(line)
  return "".join(kept)


@contextlib.contextmanager
def quiet_libtpu(enabled: bool | None = None) -> Iterator[None]:
  """Redirects fd 2 while libtpu loads or compiles; re-emits its lines except the harmless ones.

  `enabled=None` filters unless logging is at INFO or below (`python -m harness --verbose`), so a
  verbose run still shows libtpu's messages unchanged.
  """
  if enabled is None:
    enabled = not logging.getLogger().isEnabledFor(logging.INFO)
  if not enabled:
    yield
    return
  sys.stderr.flush()
  saved_fd = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved_fd, 2)
      os.close(saved_fd)
      capture.seek(0)
      rest = drop_harmless(capture.read().decode("utf-8", errors="replace"))
      if rest:
        sys.stderr.write(rest)
        sys.stderr.flush()
