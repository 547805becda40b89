"""Check the code's shape: import cycles between emzoo's modules and over-long functions (issue 13).

An import is an edge whether it sits at the top of a module or inside a function: a lazy import only moves the
cycle from import time to call time, and the two modules still cannot be understood (or changed) one at a time.
``from emzoo.a import b`` is an edge to ``emzoo.a.b`` when that is a module and to ``emzoo.a`` otherwise; importing
a submodule also runs its package's ``__init__``, but that implicit edge is not counted (it would make every
package a cycle with the modules it re-exports). A function is too long when its body, without its docstring,
spans more than :data:`MAX_FUNCTION_LINES` lines. Usage::

    .venv/bin/python benchmarks/code_shape.py          # print cycles and long functions, exit 1 if any

Examples
--------
>>> graph = import_graph(PACKAGE_ROOT)
>>> "emzoo.registry" in graph
True
>>> cycles = import_cycles({"a": {"b"}, "b": {"a", "c"}, "c": set()})
>>> cycles
[('a', 'b')]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "emzoo"
MAX_FUNCTION_LINES = 150


def _module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The emzoo modules one ``import``/``from ... import`` statement loads."""
    top = module.split(".")[0]
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == top}
    assert isinstance(node, ast.ImportFrom)
    if node.level:  # relative: resolve against the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != top:
        return set()
    found = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.add(sub if sub in known else base)
    return found


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """Map each module of the package at ``root`` to the package modules it imports, lazily or not.

    Parameters
    ----------
    root : Path
        The package folder (``emzoo/``).

    Returns
    -------
    dict of str to set of str
        Dotted module name -> dotted names of the package modules it imports (itself excluded).
    """
    modules = _modules(root)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= _imported(node, name, path.name == "__init__.py", known)
        graph[name] = {e for e in edges if e in known and e != name}
    return graph


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so deep graphs cannot hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _cycles_through(graph: dict[str, set[str]], members: set[str], path: list[str],
                    cycles: set[tuple[str, ...]], limit: int) -> None:
    """Add the cycles that extend ``path`` and whose other nodes all sort after ``path[0]`` (each cycle once)."""
    for child in sorted(graph[path[-1]] & members):
        if len(cycles) >= limit:
            return
        if child == path[0]:
            cycles.add(tuple(path))
        elif child > path[0] and child not in path:
            path.append(child)
            _cycles_through(graph, members, path, cycles, limit)
            path.pop()


def import_cycles(graph: dict[str, set[str]], limit: int = 1000) -> list[tuple[str, ...]]:
    """The elementary import cycles of ``graph``, each rotated to start at its smallest name.

    Parameters
    ----------
    graph : dict of str to set of str
        As returned by :func:`import_graph`.
    limit : int
        Stop after this many cycles (a large tangle has exponentially many).

    Returns
    -------
    list of tuple of str
        Sorted cycles; ``("a", "b")`` means a imports b and b imports a.
    """
    cycles: set[tuple[str, ...]] = set()
    for component in _strongly_connected(graph):
        if len(component) < 2:
            continue
        members = set(component)
        for start in component:
            _cycles_through(graph, members, [start], cycles, limit)
    return sorted(cycles)


def dynamic_imports(root: Path = PACKAGE_ROOT) -> list[tuple[str, int]]:
    """``importlib.import_module`` / ``__import__`` calls whose module name is not a constant: edges the graph
    cannot see (e.g. ``emzoo.models`` importing every family module), listed so a reader can check them by hand.

    Returns
    -------
    list of (str, int)
        ``(module, line)``.
    """
    found = []
    for name, path in _modules(root).items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call) or not node.args or isinstance(node.args[0], ast.Constant):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                found.append((name, node.lineno))
    return found


def long_functions(root: Path = PACKAGE_ROOT, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, str, int]]:
    """Functions whose body, without the docstring, spans more than ``limit`` lines.

    Returns
    -------
    list of (str, str, int)
        ``(file relative to the repo, qualified function name, lines)``, longest first.
    """
    found = []
    for path in _modules(root).values():
        tree = ast.parse(path.read_text(), filename=str(path))
        parents: dict[ast.AST, str] = {}
        for node in ast.walk(tree):
            prefix = parents.get(node, "")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                prefix = f"{prefix}{node.name}."
            for child in ast.iter_child_nodes(node):
                parents[child] = prefix
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = node.end_lineno - node.lineno + 1
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                lines -= body[0].end_lineno - body[0].lineno + 1
            if lines > limit:
                found.append((str(path.relative_to(root.parent)), f"{parents.get(node, '')}{node.name}", lines))
    return sorted(found, key=lambda f: -f[2])


def main() -> int:
    graph = import_graph()
    cycles = import_cycles(graph)
    print(f"{len(cycles)} import cycle(s) between {PACKAGE_ROOT.name}'s modules (lazy imports included):")
    for cycle in cycles:
        print("  " + " -> ".join((*cycle, cycle[0])))
    dynamic = dynamic_imports()
    print(f"{len(dynamic)} dynamic import(s), not in the graph above (check by hand):")
    for module, line in dynamic:
        print(f"  {module}:{line}")
    functions = long_functions()
    print(f"{len(functions)} function(s) longer than {MAX_FUNCTION_LINES} lines without their docstring:")
    for path, name, lines in functions:
        print(f"  {path}:{name}  {lines} lines")
    return 1 if cycles or functions else 0


if __name__ == "__main__":
    sys.exit(main())
