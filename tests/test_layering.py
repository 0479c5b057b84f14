"""Layers import one way only (targets <- profiling <- predictor <- hwnas), and no module
imports itself back through others: imports inside functions count (they hide cycles),
imports under `if TYPE_CHECKING:` do not (they never run)."""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["targets", "profiling", "predictor", "hwnas"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", ORDER[:-1])
def test_lower_layer_never_imports_a_higher_one(layer):
    higher = set(ORDER[ORDER.index(layer) + 1 :])
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & higher)
        for p in (ROOT / layer).rglob("*.py")
        if _imports(p) & higher
    }
    assert not offenders, f"{layer} imports a higher layer: {offenders}"


# -- import cycles -------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for layer in ORDER for p in sorted((ROOT / layer).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run, at any depth, skipping `if TYPE_CHECKING:` bodies."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the else branch does run
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def _targets(
    node: ast.Import | ast.ImportFrom,
    module: str,
    is_package: bool,
    modules: Collection[str] = (),
) -> set[str]:
    """The modules an import statement takes names from: `from pkg import sub` (a submodule
    among `modules`) needs the submodule only, not what pkg/__init__ defines."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    subs = {f"{name}.{a.name}" for a in node.names}
    if all(sub in modules for sub in subs):
        return subs
    return {name} | subs


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at run time (function-level imports too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, name, path.name == "__init__.py", modules):
                # `from a.b import name` names a module or a name in one; the parent
                # packages' __init__ run too, but are not counted (each would tie every
                # module of a package to the package's face)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None when the graph is acyclic (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        iters = [iter(sorted(graph[start]))]
        state[start] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, (
        "import cycle: " + " -> ".join(cycle) + " (imports inside functions count; move the "
        "shared code to a module both can import, or import only under TYPE_CHECKING)"
    )


def test_cycle_finder_sees_function_level_imports(tmp_path: Path) -> None:
    """The checker itself: a cycle hidden in a function is found and named; TYPE_CHECKING is not."""
    a = ast.parse("def f():\n    from pkg import b\n")
    b = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\nimport pkg.a\n"
    )
    c = ast.parse("if TYPE_CHECKING:\n    import pkg.a\n")
    graph = {}
    for name, tree in (("pkg.a", a), ("pkg.b", b), ("pkg.c", c)):
        graph[name] = {
            t
            for node in _runtime_imports(tree)
            for t in _targets(node, name, False)
            if t in ("pkg.a", "pkg.b", "pkg.c") and t != name
        }
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": set()}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_from_package_import_submodule_needs_only_the_submodule() -> None:
    """`from pkg import sub` inside a module pkg/__init__ imports is no cycle (Python loads
    the submodule alone); `from pkg import name` takes a name from pkg/__init__ and is one."""
    sub, name = (ast.parse(t).body[0] for t in ("from pkg import sub", "from pkg import name"))
    assert _targets(sub, "pkg.mod", False, {"pkg", "pkg.sub"}) == {"pkg.sub"}
    assert _targets(name, "pkg.mod", False, {"pkg", "pkg.sub"}) == {"pkg", "pkg.name"}


# -- rooms of hwnas/ -----------------------------------------------------------------------
#: What each room of hwnas/ may import (besides itself): rooms of hwnas and the lower layers.
#: docs/architecture.md draws the same table.
ROOMS: dict[str, set[str]] = {
    "hwnas.space": {"targets"},
    "hwnas.rundir": {"targets"},
    "hwnas.devices": {"targets"},
    "hwnas.nets": {"hwnas.space", "profiling", "targets"},
    "hwnas.data": {"hwnas.space", "targets"},
    "hwnas.search": {"hwnas.devices", "hwnas.space", "hwnas.nets", "hwnas.data", "hwnas.rundir", "predictor", "profiling", "targets"},
    "hwnas.train": {"hwnas.devices", "hwnas.space", "hwnas.nets", "hwnas.data", "hwnas.rundir", "targets"},
    "hwnas.deploy": {
        "hwnas.space", "hwnas.nets", "hwnas.data", "hwnas.train", "hwnas.rundir", "predictor", "profiling", "targets",
    },
    "hwnas.mainjob": {
        "hwnas.devices", "hwnas.space", "hwnas.nets", "hwnas.data", "hwnas.search", "hwnas.train", "hwnas.deploy", "hwnas.rundir",
        "predictor", "profiling", "targets",
    },
    "hwnas.commands": {
        "hwnas.devices", "hwnas", "hwnas.space", "hwnas.nets", "hwnas.data", "hwnas.search", "hwnas.train", "hwnas.deploy",
        "hwnas.mainjob", "hwnas.rundir", "predictor", "profiling", "targets",
    },
    "hwnas.cli": {"hwnas", "hwnas.commands", "targets"},
    "hwnas.__main__": {"hwnas.cli"},
    "hwnas": set(),
}  # fmt: skip


def room_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "hwnas" and len(parts) > 1 else parts[0]


def room_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, targets in graph.items():
        for target in targets:
            a, b = room_of(module), room_of(target)
            if a != b and a.startswith("hwnas"):
                edges.setdefault(a, set()).add(b)
    return edges


def test_every_module_of_hwnas_lives_in_a_known_room() -> None:
    rooms = {room_of(m) for m in _modules() if m.startswith("hwnas")}
    assert rooms <= set(ROOMS), (
        f"rooms without import rules (add them to ROOMS and docs/architecture.md): {rooms - set(ROOMS)}"
    )


def test_rooms_import_only_what_they_may() -> None:
    offenders = {
        room: sorted(targets - ROOMS[room])
        for room, targets in room_edges(import_graph()).items()
        if targets - ROOMS[room]
    }
    assert not offenders, f"rooms import what docs/architecture.md does not allow: {offenders}"


def test_argparse_only_in_the_commands() -> None:
    users = [
        str(p.relative_to(ROOT))
        for layer in ORDER
        for p in (ROOT / layer).rglob("*.py")
        if "argparse" in _imports(p)
        and not str(p.relative_to(ROOT)).startswith(("hwnas/commands/", "hwnas/cli.py"))
        and p.name != "repeatability.py"  # `python -m targets.repeatability`: its own entry point
    ]
    assert not users, f"argparse below the commands: {users}"


def test_room_rules_catch_an_upward_import() -> None:
    """The checker itself: the search importing the main job is named."""
    edges = room_edges({"hwnas.search.step": {"hwnas.mainjob.job"}, "hwnas.mainjob.job": set()})
    assert edges == {"hwnas.search": {"hwnas.mainjob"}}
    assert edges["hwnas.search"] - ROOMS["hwnas.search"] == {"hwnas.mainjob"}
