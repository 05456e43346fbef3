"""Layering rules of the package: the library never imports the binaries, and no module
imports another that imports it back (at module level)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "amr_jax"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_library_never_imports_experiments():
    offenders = {_module_name(p): sorted(n for n in _imports(p, top_level_only=False)
                                         if n == "experiments" or n.startswith("experiments."))
                 for p in PACKAGE.rglob("*.py")}
    assert not {m: n for m, n in offenders.items() if n}


def test_no_module_level_import_cycles():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    # `from a.b import c` inside a.b.d does not re-run a.b (it is already importing).
    graph = {name: {n for n in _imports(path, top_level_only=False)
                    if n in modules and n != name and not name.startswith(n + ".")}
             for name, path in modules.items()}
    # Importing a package runs its __init__: an edge to a.b.c is also an edge to a.b, except
    # from inside a.b itself (its __init__ is already running when its modules load).
    for name, targets in graph.items():
        for target in list(targets):
            parts = target.split(".")
            packages = (".".join(parts[:k]) for k in range(2, len(parts)))
            targets.update(p for p in packages
                           if p in modules and p != name and not name.startswith(p + "."))
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def _empty_container(node: ast.expr | None) -> bool:
    """`{}`, `[]`, `set()`, `dict()`, `list()`, `OrderedDict()`, `collections.OrderedDict()`."""
    if isinstance(node, (ast.Dict, ast.List, ast.Set)):
        return not (getattr(node, "keys", None) or getattr(node, "elts", None))
    if isinstance(node, ast.Call) and not node.args and not node.keywords:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name in {"dict", "list", "set", "OrderedDict", "defaultdict", "WeakValueDictionary",
                        "CompiledCache"}
    return False


def test_no_module_level_caches_or_registries():
    # A container that starts empty at import is filled at run time: state shared by every
    # caller in the process (compiled programs must live in a `CompiledCache` the caller owns).
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if _empty_container(value):
                offenders.append(f"{_module_name(path)}:{node.lineno}")
    assert not offenders
