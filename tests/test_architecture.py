"""The shape of the code: no import cycle among nntrain's modules, and small modules.

Imports are read with ``ast`` (nothing is executed), at module level and inside functions
(a lazy import that closes a cycle is still a cycle). The one allowed exception is the
registry's lazy loading of the built-in layers, losses, optimizers... (nntrain.registry
imports them on first use; they import the registry to register themselves). Imports
under ``if TYPE_CHECKING:`` are for annotations only and do not count.
"""

import ast
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "nntrain"
MAX_LINES = 460  # "about 450": a module past it says why in LONGER_WITH_A_REASON
LONGER_WITH_A_REASON = {}  # "nntrain/x.py": "why it is one module" (none today)
LAZY_LOADER = "nntrain.registry"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_nodes(tree) -> set:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imported_modules(name: str, path: Path) -> set:
    """The nntrain modules that ``name`` imports (a package's ``from . import sub`` counts as sub)."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            subs = {f"{target}.{a.name}" for a in node.names} & MODULES.keys()
            if subs:
                out.update(subs)
                if any(f"{target}.{a.name}" not in MODULES for a in node.names) and node.module:
                    out.add(target)
            elif target in MODULES:
                out.add(target)
    out.discard(name)
    return out


def cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_but_the_registrys_lazy_loading():
    graph = {name: imported_modules(name, path) for name, path in MODULES.items()}
    graph[LAZY_LOADER] = set()
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_modules_are_small():
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert {k: v for k, v in long.items() if k not in LONGER_WITH_A_REASON} == {}
