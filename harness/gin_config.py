"""The only library module that imports gin: parse files and bindings, fill the typed configs.

Parsing refuses foreign `import` lines, checks macros, and turns gin's errors into one line that
names the closest valid spelling; `read_configs` calls each registered section once (so the
operative config records it) and returns the frozen `harness.configs.Configs`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util  # noqa: F401  pylint: disable=unused-import  gin's resource reader uses importlib.util without importing it
import inspect
import logging
import os
import pathlib
import re
from typing import Any, Callable, Iterator, Mapping, Sequence

import gin
from gin import config_parser

from harness import configs as C
from harness.errors import UserError
from harness.suggest import did_you_mean

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
GIN_DIR = REPO_ROOT / "gin"
PROJECT_PACKAGE = "harness"
_IMPORT_FIX = f"only the project's own modules ({PROJECT_PACKAGE}.*) may be imported"
_LITERALS = ("values are Python literals: numbers, 'quoted strings', lists, tuples, dicts, True, "
             "False, None, @references, %MACROS")
_BARE_WORD = re.compile(r"[A-Za-z_][\w.\-]*")
_BAD_TOKEN = re.compile(r"Failed to parse token '(.*)'")
_UNKNOWN_CONFIGURABLE = re.compile(r"No configurable matching '([^']*)'\.")
_UNKNOWN_PARAMETER = re.compile(
    r"Configurable '([^']*)' doesn't have a parameter named '([^']*)'\.")
_SIMPLE = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


class ConfigError(UserError):
  """A mistake in gin files or bindings, with a one-line message."""


def _check_types(cls: type, name: str, kwargs: dict[str, Any]) -> None:
  """A quoted number (`run.steps='12'`) or a number for a name fails with one line, not later."""
  for field in dataclasses.fields(cls):
    if field.name not in kwargs:
      continue
    value = kwargs[field.name]
    options = [t.strip() for t in str(field.type).split("|")]
    if "None" in options and value is None:
      continue
    types = [o for o in options if o != "None"]
    if not types or any(t not in _SIMPLE for t in types):
      continue  # a type this check does not model (tuples, ...): the dataclass checks it
    allowed = tuple(t for o in types for t in _SIMPLE[o])
    if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
      raise UserError(f"{name}.{field.name}={value!r}: expected {' or '.join(options)}")


def _register(cls: type, name: str) -> Callable:
  """Makes `name.field = value` bind the dataclass's fields, checked against its signature."""

  def make(**kwargs: Any):
    _check_types(cls, name, kwargs)
    return cls(**kwargs)

  make.__signature__ = inspect.signature(cls)
  make.__name__ = name
  make.__doc__ = cls.__doc__
  return gin.configurable(name)(make)


# By the name users type, in the order of harness.configs.Configs.
CONFIGURABLES = {f.name: _register(f.type if isinstance(f.type, type) else getattr(C, f.type),
                                   f.name) for f in dataclasses.fields(C.Configs)}


def read_configs() -> C.Configs:
  """Calls each section so gin fills it (and records it in the operative config)."""
  return C.Configs(**{name: make() for name, make in CONFIGURABLES.items()})


def clear() -> None:
  """Forgets every binding (between runs in one process)."""
  gin.clear_config()


def operative_config() -> str:
  """The config as used so far (gin lists only what was called)."""
  return gin.operative_config_str()


class _QuietSearch(logging.Filter):
  """gin logs every search-path miss at ERROR level (on the root logger) while finding includes."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Path not found")


class _ProjectImportsOnly(gin.config.ParseContext):
  """gin's parse context, refusing an `import` of anything but the project's own package."""

  def process_import(self, statement: config_parser.ImportStatement) -> None:
    module = statement.module
    if module != PROJECT_PACKAGE and not module.startswith(PROJECT_PACKAGE + "."):
      raise ValueError(f"gin '{statement.format()}' is refused: {_IMPORT_FIX}")
    super().process_import(statement)


@contextlib.contextmanager
def project_imports_only() -> Iterator[None]:
  """While gin parses: refuse foreign `import` lines, and look up includes as plain files only."""
  # gin runs `import` statements of files and bindings with `__import__`: `import pwn` would run a
  # module from the working directory. Its package-resource reader looks for an include
  # 'a/b/x.gin' by importing package `a`, which runs code too; the search paths find includes.
  # pylint: disable=protected-access
  saved_context, saved_readers = gin.config.ParseContext, list(gin.config._FILE_READERS)
  gin.config.ParseContext = _ProjectImportsOnly
  gin.config._FILE_READERS[:] = [(open, os.path.isfile)]
  quiet, root = _QuietSearch(), logging.getLogger()
  root.addFilter(quiet)
  try:
    yield
  finally:
    root.removeFilter(quiet)
    gin.config.ParseContext = saved_context
    gin.config._FILE_READERS[:] = saved_readers


def search_paths(extra: Sequence[str] = ()) -> list[str]:
  """Where gin files and includes are looked up: cwd, the user's paths, the repo root and gin/."""
  return [os.getcwd(), *extra, str(REPO_ROOT), str(GIN_DIR)]


def resolve_file(name: str, paths: Sequence[str]) -> str:
  """Finds a gin file as given or under a search path; a one-line error if missing."""
  found = _find_include(name, paths)
  if found is None:
    raise ConfigError(f"--gin_file={name}: no such file (searched: {', '.join(paths)})")
  return str(found.resolve())


def parse(gin_files: Sequence[str], bindings: Sequence[str],
          extra_search_paths: Sequence[str] = ()) -> list[str]:
  """Parses gin files then bindings (later wins); returns the resolved file paths."""
  paths = search_paths(extra_search_paths)
  for path in paths:
    gin.add_config_file_search_path(path)
  files = [resolve_file(f, paths) for f in gin_files]
  try:
    with project_imports_only():
      gin.parse_config_files_and_bindings(files, list(bindings), finalize_config=False)
  except SyntaxError as err:  # a value gin cannot read, e.g. a string without quotes
    raise ConfigError(explain_syntax_error(err)) from None
  except (ValueError, KeyError, IOError) as err:
    raise ConfigError(suggest_name(_one_line(err), CONFIGURABLES)) from None
  except Exception as err:  # gin surfaces tokenizer errors for malformed values
    raise ConfigError(f"cannot parse gin bindings: {_one_line(err)}") from None
  try:
    # gin resolves a macro only when a configurable is called: an undefined one would surface as
    # a TypeError deep in the run.
    check_macros(files, bindings, paths)
  except ValueError as err:
    raise ConfigError(str(err)) from None
  return files


def check_bindings(gin_files: Sequence[str], bindings: Sequence[str],
                   extra_search_paths: Sequence[str] = ()) -> C.Configs:
  """The configs of these files and bindings, every name and value checked (a ConfigError or
  UserError otherwise); leaves gin cleared."""
  gin.clear_config()
  try:
    parse(gin_files, bindings, extra_search_paths)
    return read_configs()
  finally:
    gin.clear_config()


def _one_line(err: Exception) -> str:
  """Gin reports 'message / In file "f", line n / text' on three lines: keep one."""
  lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
  if not lines:
    return type(err).__name__
  where = next((ln for ln in lines[1:] if ln.startswith("In ")), "")
  return f"{lines[0]} ({where[3:]})" if where else lines[0]


def _where(err: SyntaxError) -> str:
  """' (file "f", line n)' or ' (bindings string line n)' for a gin syntax error."""
  if err.filename:
    return f' (file "{err.filename}", line {err.lineno})'
  return f" (bindings string line {err.lineno})" if err.lineno else ""


def explain_syntax_error(err: SyntaxError) -> str:
  """One line for a value gin cannot read; a bare word gets the quoted binding as the fix."""
  text = (err.text or "").strip()
  token = _BAD_TOKEN.search(str(err.msg))
  lhs, _, rhs = text.partition("=")
  if token and rhs.strip() == token.group(1) and _BARE_WORD.fullmatch(token.group(1)):
    return f"strings need quotes: {lhs.strip()}={token.group(1)!r}{_where(err)}"
  first = (str(err.msg).splitlines() or [type(err).__name__])[0]
  if text and not err.filename:
    return f"cannot parse gin binding '{text}': {first} ({_LITERALS})"
  return f"cannot parse gin: {first}{_where(err)}"


def _hint(name: str, choices: Sequence[str], kind: str) -> str:
  """'; did you mean 'x'?', or the valid names when none is close."""
  return did_you_mean(name, choices) or f"; valid {kind}: {', '.join(choices)}"


def suggest_name(message: str, configurables: Mapping[str, Callable]) -> str:
  """Adds the closest valid name to gin's unknown-configurable and unknown-parameter messages."""
  unknown = _UNKNOWN_CONFIGURABLE.search(message)
  if unknown:
    hint = _hint(unknown.group(1), list(configurables), "configurables")
  else:
    unknown = _UNKNOWN_PARAMETER.search(message)
    if not unknown or unknown.group(1) not in configurables:
      return message
    params = list(inspect.signature(configurables[unknown.group(1)]).parameters)
    hint = _hint(unknown.group(2), params, "parameters")
  return message[:unknown.end() - 1] + hint + message[unknown.end():]


@dataclasses.dataclass(frozen=True)
class _MacroUse:
  """A `%NAME` in the value of `binding`, at `where`."""
  name: str
  binding: str
  where: str


class _MacroRecorder(config_parser.ParserDelegate):
  """Notes the macros a statement uses; resolves nothing."""

  def __init__(self):
    self.names: list[str] = []

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return None

  def macro(self, macro_name):
    self.names.append(macro_name)
    return None


def _find_include(name: str, paths: Sequence[str]) -> pathlib.Path | None:
  """An include as gin finds it: relative to the working directory, then under each path."""
  for candidate in [pathlib.Path(name), *(pathlib.Path(p) / name for p in paths)]:
    if candidate.is_file():
      return candidate
  return None


def _scan_macros(text: str, origin: str | None, paths: Sequence[str],
                 uses: list[_MacroUse], defined: set[str]) -> bool:
  """Collects macro uses and definitions of gin text and its includes; False if one is missing."""
  recorder, complete = _MacroRecorder(), True
  for st in config_parser.ConfigParser(text, recorder):
    if isinstance(st, config_parser.IncludeStatement):
      path = _find_include(st.filename, paths)
      if path is None:
        complete = False
        continue
      complete &= _scan_macros(path.read_text(), str(path), paths, uses, defined)
    elif isinstance(st, config_parser.BindingStatement):
      selector = f"{st.scope}/{st.selector}" if st.scope else st.selector
      if not st.arg_name:
        defined.add(selector.rsplit("/", 1)[-1])
      where = (f'file "{origin}", line {st.location.line_num}' if origin
               else f"bindings string line {st.location.line_num}")
      binding = f"{selector}.{st.arg_name}" if st.arg_name else selector
      uses += [_MacroUse(name, binding, where) for name in recorder.names]
    recorder.names.clear()
  return complete


def _is_constant(name: str) -> bool:
  """Whether `%name` is a gin constant such as gin.REQUIRED rather than a macro."""
  try:
    gin.query_parameter(name)
  except ValueError:
    return False
  return True


def check_macros(files: Sequence[str], bindings: Sequence[str], paths: Sequence[str]) -> None:
  """Raises a one-line ValueError for a `%NAME` that no file or binding defines."""
  uses: list[_MacroUse] = []
  defined: set[str] = set()
  complete = True
  for file in files:
    complete &= _scan_macros(pathlib.Path(file).read_text(), file, paths, uses, defined)
  complete &= _scan_macros("\n".join(bindings), None, paths, uses, defined)
  if not complete:
    return  # an include found by other means: its definitions are unknown here, so do not guess
  for use in uses:
    name = use.name.rsplit("/", 1)[-1]
    if name in defined or _is_constant(use.name):
      continue
    raise ValueError(f"{use.binding}=%{use.name}: macro {name} is not defined; define it with "
                     f"a binding '{name} = value'{did_you_mean(name, defined)} ({use.where})")
