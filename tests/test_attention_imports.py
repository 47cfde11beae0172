"""harness/attention imports at module level only, without cycles; types.py is a leaf."""
import ast
import pathlib

PACKAGE = "harness.attention"
ROOT = pathlib.Path(__file__).resolve().parent.parent / "harness" / "attention"


def _modules() -> dict[str, ast.Module]:
  return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(ROOT.glob("*.py"))}


def _package_imports(tree: ast.Module, modules) -> set[str]:
  """Modules of the package that `tree` imports (from-imports of a module or of a name in one)."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
      found |= {a.name for a in node.names if a.name in modules}
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + "."):
      found.add(node.module.split(".")[2])
    elif isinstance(node, ast.Import):
      found |= {a.name.split(".")[2] for a in node.names if a.name.startswith(PACKAGE + ".")}
  return found


def test_no_function_local_imports():
  local = []
  for name, tree in _modules().items():
    for fn in ast.walk(tree):
      if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        local += [f"{name}.{fn.name}:{n.lineno}" for n in ast.walk(fn)
                  if isinstance(n, (ast.Import, ast.ImportFrom))]
  assert not local, local


def test_types_imports_nothing_from_the_package():
  modules = _modules()
  assert _package_imports(modules["types"], modules) == set()


def test_no_import_cycles():
  modules = _modules()
  graph = {name: _package_imports(tree, modules) - {name} for name, tree in modules.items()
           if name != "__init__"}
  done, path = set(), []

  def visit(name):
    assert name not in path, " -> ".join(path[path.index(name):] + [name])
    if name in done:
      return
    path.append(name)
    for dep in sorted(graph.get(name, ())):
      visit(dep)
    path.pop()
    done.add(name)

  for name in graph:
    visit(name)
  assert graph["kernels"] >= {"blockwise", "splash"}  # the edges that once closed a cycle
