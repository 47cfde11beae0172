"""The package imports read top-down: no import cycle, no import hidden inside a function.

Function-local imports are allowed only for optional heavy dependencies (libtpu, TensorBoard's
profile plugin), which a CPU-only install may lack or which cost seconds to load.
"""
from __future__ import annotations

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "launch")
OPTIONAL = ("libtpu", "tensorboard_plugin_profile", "xprof")


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
  return {_module_name(p): ast.parse(p.read_text(), str(p))
          for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, module: str, known: set[str]) -> set[str]:
  """Project modules an import statement loads (a `from pkg import mod` names the module)."""
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  else:
    base = node.module or ""
    if node.level:  # relative import
      base = ".".join(module.split(".")[:-node.level] + ([base] if base else []))
    names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
  return {n for n in names if n.split(".")[0] in PACKAGES and n in known}


def _top_level_imports(tree: ast.Module):
  """Imports run when the module is imported (module level, including inside if/try blocks)."""
  for node in tree.body:
    for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
      if isinstance(sub, (ast.Import, ast.ImportFrom)):
        yield sub


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  known = set(modules)
  return {name: set().union(*(_imported(n, name, known) for n in _top_level_imports(tree)))
          for name, tree in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Every strongly connected group of more than one module (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        group.append(w)
        if w == v:
          break
      if len(group) > 1:
        out.append(sorted(group))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def _without_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
  """A package's __init__ importing its own modules is not a cycle with them."""
  return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_cycles():
  assert _cycles(_without_packages(_graph())) == []


def test_cycle_finder_finds_a_cycle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_function_local_imports_but_optional_heavy_ones():
  found = []
  for name, tree in _modules().items():
    top = set(map(id, _top_level_imports(tree)))
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
        targets = ([a.name for a in node.names] if isinstance(node, ast.Import)
                   else [node.module or ""])
        if not all(t.split(".")[0] in OPTIONAL for t in targets):
          found.append(f"{name}:{node.lineno} {ast.unparse(node)}")
  assert found == []


def test_leaf_modules_import_nothing_from_the_project():
  graph = _graph()
  assert graph["harness.attention.types"] == set()
  assert graph["harness.errors"] == set()
  assert {"harness.attention.blockwise", "harness.attention.splash"} <= graph[
      "harness.attention.kernels"]  # the edges that once closed a cycle
