"""Gin parsing: search paths, one-line errors, and the operative config of a run."""
from __future__ import annotations

import importlib.util  # noqa: F401  gin's resource reader uses importlib.util without importing it
import logging
import os
import pathlib
from typing import Callable, Sequence

import gin

from harness import gin_checks

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
GIN_DIR = REPO_ROOT / "gin"


class _QuietSearch(logging.Filter):
  """gin logs every search-path miss at ERROR level while looking for an include."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Path not found")


logging.getLogger().addFilter(_QuietSearch())


class ConfigError(ValueError):
  """A user mistake in gin files or bindings, with a one-line message."""


def _register_configurables() -> dict[str, Callable]:
  """Imports every module that defines gin configurables, so names resolve; returns them by name."""
  from harness import configurables  # pylint: disable=import-outside-toplevel
  found = dict(configurables.CONFIGURABLES)
  try:
    from harness.aot.config import aot_config  # pylint: disable=import-outside-toplevel
    found["aot"] = aot_config
  except ImportError:
    pass
  return found


def search_paths(extra: Sequence[str] = ()) -> list[str]:
  """Where gin files and includes are looked up: cwd, the user's paths, the repo root and gin/."""
  return [os.getcwd(), *extra, str(REPO_ROOT), str(GIN_DIR)]


def resolve_file(name: str, paths: Sequence[str]) -> str:
  """Finds a gin file as given or under a search path; a one-line error if missing."""
  candidates = [pathlib.Path(name)] + [pathlib.Path(p) / name for p in paths]
  for candidate in candidates:
    if candidate.is_file():
      return str(candidate.resolve())
  raise ConfigError(f"--gin_file={name}: no such file (searched: {', '.join(paths)})")


def _one_line(err: Exception) -> str:
  """Gin reports 'message / In file "f", line n / text' on three lines: keep one."""
  lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
  if not lines:
    return type(err).__name__
  where = next((ln for ln in lines[1:] if ln.startswith("In ")), "")
  return f"{lines[0]} ({where[3:]})" if where else lines[0]


def parse(gin_files: Sequence[str], bindings: Sequence[str],
          extra_search_paths: Sequence[str] = ()) -> list[str]:
  """Parses gin files then bindings (later wins); returns the resolved file paths."""
  known = _register_configurables()
  paths = search_paths(extra_search_paths)
  for path in paths:
    gin.add_config_file_search_path(path)
  files = [resolve_file(f, paths) for f in gin_files]
  try:
    with gin_checks.project_imports_only():
      gin.parse_config_files_and_bindings(files, list(bindings), finalize_config=False)
  except SyntaxError as err:  # a value gin cannot read, e.g. a string without quotes
    raise ConfigError(gin_checks.explain_syntax_error(err)) from None
  except (ValueError, KeyError, IOError) as err:
    raise ConfigError(gin_checks.suggest_name(_one_line(err), known)) from None
  except Exception as err:  # gin surfaces tokenizer errors for malformed values
    raise ConfigError(f"cannot parse gin bindings: {_one_line(err)}") from None
  try:
    # gin resolves a macro only when a configurable is called: an undefined one would surface as
    # a TypeError deep in the run.
    gin_checks.check_macros(files, bindings, paths)
  except ValueError as err:
    raise ConfigError(str(err)) from None
  return files


def check_bindings(gin_files: Sequence[str], bindings: Sequence[str],
                   extra_search_paths: Sequence[str] = ()) -> None:
  """Raises ConfigError if the files or bindings name anything unknown; leaves gin cleared."""
  gin.clear_config()
  try:
    parse(gin_files, bindings, extra_search_paths)
  finally:
    gin.clear_config()


def operative_config() -> str:
  """The config as used so far (gin lists only what was called)."""
  return gin.operative_config_str()
