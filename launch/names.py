"""Readable, deterministic run names that are also valid XPK workload names."""
from __future__ import annotations

import pathlib
import re
from typing import Any, Mapping

# XPK (and Kubernetes) workload names: lower-case RFC 1123 labels of at most 40 characters.
NAME_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_LEN = 40

# Short prefixes for the bindings a sweep varies most; '' keeps the value alone.
DEFAULT_ABBREV = {
    "attention.num_chunks": "c",
    "attention.ulysses_degree": "u",
    "attention.variant": "",
    "attention.kernel": "",
    "mesh.context": "cp",
    "mesh.data": "dp",
    "mesh.fsdp": "fsdp",
    "mesh.tensor": "tp",
    "run.steps": "s",
    "run.batch_size": "b",
}


def sanitize(text: str) -> str:
  """Lower-case, runs of other characters become one '-', no '-' at either end."""
  return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _value_token(value: Any) -> str:
  """A short name-safe spelling of a grid value (4 -> '4', -1 -> 'm1', 0.5 -> '0p5')."""
  if isinstance(value, bool):
    return "t" if value else "f"
  if isinstance(value, (int, float)):
    return repr(value).replace("-", "m").replace(".", "p").replace("+", "")
  if isinstance(value, str):
    return sanitize(value)
  return sanitize(repr(value))


def _default_abbrev(key: str, value: Any) -> str:
  """Strings speak for themselves; numbers get the initials of the parameter name."""
  if isinstance(value, str):
    return ""
  param = key.rsplit(".", 1)[-1]
  return "".join(word[:1] for word in param.split("_") if word)


def axis_token(key: str, value: Any, abbrev: Mapping[str, str]) -> str:
  """The name fragment for one grid axis at one value, e.g. ('attention.num_chunks', 4) -> 'c4'."""
  if key == "gin_file":
    return sanitize(pathlib.PurePosixPath(str(value)).stem)
  if isinstance(value, bool):  # a flag reads best under its own name
    label = abbrev.get(key) or DEFAULT_ABBREV.get(key) or sanitize(key.rsplit(".", 1)[-1])
    return label if value else f"no-{label}"
  prefix = abbrev.get(key, DEFAULT_ABBREV.get(key, _default_abbrev(key, value)))
  token = _value_token(value)
  if prefix and token[:1].isalpha():
    return f"{prefix}-{token}"
  return f"{prefix}{token}"


def join(parts: list[str]) -> str:
  """Joins fragments with '-' and collapses repeated dashes."""
  return re.sub(r"-+", "-", "-".join(p for p in parts if p)).strip("-")


def check(name: str) -> None:
  """One-line ValueError unless `name` is a valid workload name."""
  if len(name) > MAX_LEN:
    raise ValueError(
        f"run name '{name}' has {len(name)} characters (XPK allows {MAX_LEN}); "
        "shorten sweep.name or set sweep.abbrev")
  if not NAME_RE.fullmatch(name):
    raise ValueError(f"run name '{name}' must match {NAME_RE.pattern}; change sweep.name")
