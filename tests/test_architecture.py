"""The house rules, checked on the code: no import loops, and stages import only downwards.

Every `import` and `from ... import` in `node/` and `models/` counts, function-local and
`TYPE_CHECKING` ones included, because a loop through a function-local import is still a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"myonode": REPO / "node", "myonode.models": REPO / "models"}

# Lowest first: a package may import only itself and packages before it in this list.
LAYERS = (
    "myonode.dicom",
    "myonode.core",
    "myonode.store",
    "myonode.queue",
    "myonode.models",
    "myonode.infer",
    "myonode.measure",
    "myonode.qc",
    "myonode.encode",
    "myonode.pipelines",
    "myonode.route",
    "myonode.assemble",
    "myonode.receive",
    "myonode.dispatch",
    "myonode.worker",
    "myonode.app",
)


def module_files() -> dict[str, Path]:
    modules = {}
    for prefix, root in PACKAGE_DIRS.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([prefix, *parts])] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The node modules `name` imports anywhere in its file (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            # `from package import module` depends on the module, not on the package's face
            names = [n for n in submodules if n in known]
            targets = names + ([base] if len(names) < len(submodules) else [])
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str) -> int | None:
    for rank, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return rank
    return None


def test_the_cycle_finder_sees_a_loop_through_a_function_local_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_loops_in_the_node_or_the_models():
    loops = cycles(import_graph())
    assert not loops, "import loops:\n" + "\n".join(" <-> ".join(c) for c in loops)


def test_stages_import_only_what_is_below_them():
    graph = import_graph()
    upward = []
    for module, targets in graph.items():
        rank = layer_of(module)
        if rank is None:
            continue
        for target in targets:
            target_rank = layer_of(target)
            if target_rank is not None and target_rank > rank:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that run upward:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("package", [p for p in LAYERS if p != "myonode.models"])
def test_every_stage_package_says_what_it_owns(package):
    init = module_files().get(package)
    if init is None:
        pytest.skip(f"{package} does not exist (yet)")
    docstring = ast.get_docstring(ast.parse(init.read_text()))
    assert docstring and "import" in docstring.lower(), f"{init}: say what it owns and may import"
