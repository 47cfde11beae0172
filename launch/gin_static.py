"""Reads gin files without executing them: literal bindings, macros and includes."""
from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Any, Sequence

from gin import config_parser

# The harness's gin refuses `import` of anything else too; read statically, an import would only
# be skipped here and then run by the harness.
PROJECT_PACKAGE = "harness"
_BAD_TOKEN = re.compile(r"Failed to parse token '(.*)'")
_BARE_WORD = re.compile(r"[A-Za-z_][\w.\-]*")


@dataclasses.dataclass(frozen=True)
class GinRef:
  """A `@name` or `@name()` reference kept as text, to be written back into a binding."""
  name: str
  evaluate: bool

  def __repr__(self) -> str:
    return f"@{self.name}()" if self.evaluate else f"@{self.name}"


@dataclasses.dataclass(frozen=True)
class GinMacro:
  """A `%NAME` macro that the file itself does not define (left for the harness to resolve)."""
  name: str

  def __repr__(self) -> str:
    return f"%{self.name}"


class _Delegate(config_parser.ParserDelegate):
  """Keeps references and macros as placeholders instead of resolving them through gin."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return GinRef(scoped_configurable_name, bool(evaluate))

  def macro(self, macro_name):
    return GinMacro(macro_name)


def _resolve_macros(value: Any, macros: dict[str, Any]) -> Any:
  """Replaces macros defined earlier in the same files by their values."""
  if isinstance(value, GinMacro) and value.name in macros:
    return macros[value.name]
  if isinstance(value, list):
    return [_resolve_macros(v, macros) for v in value]
  if isinstance(value, tuple):
    return tuple(_resolve_macros(v, macros) for v in value)
  if isinstance(value, dict):
    return {_resolve_macros(k, macros): _resolve_macros(v, macros) for k, v in value.items()}
  return value


def _check_import(statement: config_parser.ImportStatement, origin: str) -> None:
  """A one-line ValueError for an `import` of anything but the project's own modules."""
  module = statement.module
  if module != PROJECT_PACKAGE and not module.startswith(PROJECT_PACKAGE + "."):
    raise ValueError(f"{origin}, line {statement.location.line_num}: gin '{statement.format()}' "
                     f"is refused: only the project's own modules ({PROJECT_PACKAGE}.*) may be "
                     "imported")


def find_file(name: str, search_paths: Sequence[pathlib.Path]) -> pathlib.Path | None:
  """The first existing `name` as given or under a search path."""
  for candidate in [pathlib.Path(name)] + [pathlib.Path(p) / name for p in search_paths]:
    if candidate.is_file():
      return candidate
  return None


def _parse_error(err: Exception, origin: str) -> str:
  """One line for gin text that does not parse; a bare word gets 'strings need quotes'."""
  token = _BAD_TOKEN.search(str(err))
  if isinstance(err, SyntaxError) and token and _BARE_WORD.fullmatch(token.group(1)):
    return (f"{origin}, line {err.lineno}: strings need quotes: write {token.group(1)!r}, "
            f"not {token.group(1)}")
  first = str(err).splitlines()[0] if str(err) else type(err).__name__
  return f"{origin}: cannot parse gin ({first})"


def read_bindings(path: pathlib.Path, search_paths: Sequence[pathlib.Path] = (),
                  macros: dict[str, Any] | None = None) -> dict[str, Any]:
  """Bindings `[scope/]selector.param -> value` of a file and its includes, later wins."""
  try:
    text = pathlib.Path(path).read_text()
  except OSError as err:
    raise ValueError(f"{path}: cannot read ({err.strerror})") from None
  return parse_bindings(text, str(path), [pathlib.Path(path).parent, *search_paths], macros)


def parse_bindings(text: str, origin: str, search_paths: Sequence[pathlib.Path] = (),
                   macros: dict[str, Any] | None = None) -> dict[str, Any]:
  """Bindings of gin text; `macros` carries macro definitions across files and is updated."""
  macros = {} if macros is None else macros
  bindings: dict[str, Any] = {}
  try:
    statements = list(config_parser.ConfigParser(text, _Delegate()))
  except Exception as err:  # gin raises SyntaxError / tokenize errors on malformed text
    raise ValueError(_parse_error(err, origin)) from None
  for st in statements:
    if isinstance(st, config_parser.ImportStatement):
      _check_import(st, origin)
    elif isinstance(st, config_parser.IncludeStatement):
      included = find_file(st.filename, search_paths)
      if included is None:
        raise ValueError(f"{origin}: include '{st.filename}' not found")
      bindings.update(read_bindings(included, search_paths, macros))
    elif isinstance(st, config_parser.BindingStatement):
      value = _resolve_macros(st.value, macros)
      if not st.arg_name:  # `NAME = value` defines a macro
        macros[st.selector] = value
        continue
      key = f"{st.selector}.{st.arg_name}"
      bindings[f"{st.scope}/{key}" if st.scope else key] = value
  return bindings
