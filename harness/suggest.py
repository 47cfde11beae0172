"""The closest valid spelling of a mistyped name or value, for one-line errors."""
from __future__ import annotations

import difflib
from typing import Iterable

# difflib's default; it maps 'ulyses'->'ulysses', 'splsh'->'splash', 'chunks'->'num_chunks'.
_CUTOFF = 0.6


def closest(value: object, choices: Iterable[object]) -> str | None:
  """The string choice nearest to `value`, or None when nothing is close (or value is no string)."""
  if not isinstance(value, str):
    return None
  strings = [c for c in choices if isinstance(c, str) and c != value]
  matches = difflib.get_close_matches(value, strings, n=1, cutoff=_CUTOFF)
  return matches[0] if matches else None


def did_you_mean(value: object, choices: Iterable[object]) -> str:
  """'; did you mean 'x'?' to end an error message, or '' when no choice is close."""
  match = closest(value, choices)
  return f"; did you mean {match!r}?" if match is not None else ""
