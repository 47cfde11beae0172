"""LIBTPU flag sets: parsed from '--name=value' strings, applied per compile or through the env.

In jax 0.10.2 + libtpu 0.0.42 both routes work for the XLA TPU flags used here: passed per compile
(`lowered.compile(compiler_options={...})`, so one process compiles with and without them), or in
`LIBTPU_INIT_ARGS` before libtpu loads (what a real TPU run uses). Per-compile options reject unknown
names ('No such compile option'); `--xla_enable_async_reduce_scatter` is one such name in 0.0.42.
"""
from __future__ import annotations

import re
from typing import Sequence

from harness.errors import UserError

_FLAG_RE = re.compile(r"--([A-Za-z0-9_]+)=(\S+)")


def parse_flags(flags: Sequence[str] | str | None,
                binding: str = "aot.libtpu_flags") -> dict[str, str]:
  """['--a=true', '--b=1'] or '--a=true --b=1' -> {'a': 'true', 'b': '1'} (order kept)."""
  if not flags:
    return {}
  items = flags.split() if isinstance(flags, str) else [f for s in flags for f in str(s).split()]
  parsed = {}
  for item in items:
    m = _FLAG_RE.fullmatch(item)
    if not m:
      raise UserError(f"{binding}: {item!r} is not of the form '--xla_name=value'")
    parsed[m.group(1)] = m.group(2)
  return parsed


def compiler_options(flags: Sequence[str] | str | None) -> dict[str, str]:
  """Options for `Lowered.compile(compiler_options=...)`."""
  return parse_flags(flags)


def libtpu_init_args(flags: Sequence[str] | str | None) -> str:
  """The value of LIBTPU_INIT_ARGS for a real TPU run (set before JAX initialises the TPU)."""
  return " ".join(f"--{k}={v}" for k, v in parse_flags(flags).items())


def flag_list(flags: Sequence[str] | str | None, binding: str = "aot.libtpu_flags") -> list[str]:
  """Normalised '--name=value' strings, as recorded in aot.json."""
  return [f"--{k}={v}" for k, v in parse_flags(flags, binding).items()]


def is_unknown_option_error(error: Exception) -> bool:
  return "No such compile option" in str(error)
