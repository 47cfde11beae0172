"""Safety and clarity around gin parsing: project-only imports, defined macros, one-line errors."""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import pathlib
import re
from typing import Callable, Iterator, Mapping, Sequence

import gin
from gin import config_parser

from harness.suggest import did_you_mean

PROJECT_PACKAGE = "harness"
_IMPORT_FIX = f"only the project's own modules ({PROJECT_PACKAGE}.*) may be imported"
_LITERALS = ("values are Python literals: numbers, 'quoted strings', lists, tuples, dicts, True, "
             "False, None, @references, %MACROS")
_BARE_WORD = re.compile(r"[A-Za-z_][\w.\-]*")
_BAD_TOKEN = re.compile(r"Failed to parse token '(.*)'")
_UNKNOWN_CONFIGURABLE = re.compile(r"No configurable matching '([^']*)'\.")
_UNKNOWN_PARAMETER = re.compile(
    r"Configurable '([^']*)' doesn't have a parameter named '([^']*)'\.")


def is_project_module(module: str) -> bool:
  """Whether a gin `import` names the project's own package (the only code gin may import)."""
  return module == PROJECT_PACKAGE or module.startswith(PROJECT_PACKAGE + ".")


def import_refusal(statement: config_parser.ImportStatement) -> str:
  """The one-line reason a gin `import` is refused."""
  return f"gin '{statement.format()}' is refused: {_IMPORT_FIX}"


class _ProjectImportsOnly(gin.config.ParseContext):
  """gin's parse context, refusing an `import` statement before it runs any code."""

  def process_import(self, statement: config_parser.ImportStatement) -> None:
    if not is_project_module(statement.module):
      raise ValueError(import_refusal(statement))
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
  try:
    yield
  finally:
    gin.config.ParseContext = saved_context
    gin.config._FILE_READERS[:] = saved_readers


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
