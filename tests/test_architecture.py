"""Imports point one way (architecture.md): every import of every module, function-level ones included, read from
the source (AST), forms no circle; the library (metareward/) imports nothing from the layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("metareward", "tasks", "flows")
ABOVE_THE_LIBRARY = ("prefect", "flows", "tasks")


def modules() -> dict[str, Path]:
    """Every module of the three packages: dotted name -> file."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(name: str, path: Path) -> set[str]:
    """The dotted names a module imports anywhere in its file (``from a import b``: ``a.b`` when that is a module
    of ours, else ``a``; relative imports resolved against the module's package)."""
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m in imported(name, path) if m in known and m != name} for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_function_level_imports():
    """The graph has the lazy imports too (a circle through a function body is still a circle)."""
    edges = graph()
    assert len(edges) > 40
    assert "metareward.pipeline.benchmark" in edges["metareward.pipeline.stages"]  # imported inside benchmark()
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert circles(graph()) == []


def test_the_library_imports_nothing_above_it():
    found = {name: sorted(m for m in imported(name, path) if m.split(".")[0] in ABOVE_THE_LIBRARY)
             for name, path in modules().items() if name.split(".")[0] == "metareward"}
    assert {k: v for k, v in found.items() if v} == {}


# What each subpackage of the library may import from the others (its __init__ docstring says the same in words).
# The top-level modules (config, records, progress, ...) are open to all; pipeline is the top and may import all.
MAY_IMPORT = {
    "method": set(),
    "inputs": {"method"},
    "engines": {"method"},
    "training": {"runstore"},
    "runstore": set(),
    "evals": {"engines", "inputs", "method", "runstore"},
    "reporting": {"runstore"},
    "pipeline": {"method", "inputs", "engines", "training", "runstore", "evals", "reporting"},
}


def test_subpackages_import_only_what_their_docstring_allows():
    found = {}
    for name, path in modules().items():
        parts = name.split(".")
        if parts[0] != "metareward" or len(parts) < 3 or parts[1] not in MAY_IMPORT:
            continue
        for target in imported(name, path):
            t = target.split(".")
            if t[0] == "metareward" and len(t) > 1 and t[1] in MAY_IMPORT and t[1] != parts[1]:
                if t[1] not in MAY_IMPORT[parts[1]]:
                    found.setdefault(name, []).append(target)
    assert found == {}


def subpackage(module: str) -> str | None:
    """The library subpackage a module belongs to (``metareward.engines.fake`` -> ``engines``), None for the
    top-level modules (open to all) and for tasks/ and flows/."""
    parts = module.split(".")
    return parts[1] if parts[0] == "metareward" and len(parts) > 2 else None


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded onto the library's subpackages: an edge A -> B where a module of A imports one of
    B (the top-level modules, tasks/ and flows/ are left out)."""
    out: dict[str, set[str]] = {}
    for source, targets in edges.items():
        a = subpackage(source)
        if a is None:
            continue
        out.setdefault(a, set()).update(b for t in targets if (b := subpackage(t)) not in (None, a))
    for b in {b for targets in out.values() for b in targets}:
        out.setdefault(b, set())
    return out


def test_package_graph_folds_modules_onto_subpackages():
    """Hand-checked: engines.fake -> method.prompts and training.dpo -> engines.precision fold to engines -> method
    and training -> engines; a module -> module edge inside one package and the top-level modules drop out, and no
    module circle (fake -> prompts, dpo -> precision, precision -> fake) is still a package circle when engines
    also imports training."""
    edges = {"metareward.engines.fake": {"metareward.method.prompts", "metareward.config"},
             "metareward.engines.precision": {"metareward.engines.fake"},
             "metareward.training.dpo": {"metareward.engines.precision", "metareward.training.sft"},
             "metareward.training.sft": set(), "metareward.method.prompts": set(), "metareward.config": set()}
    assert package_graph(edges) == {"engines": {"method"}, "training": {"engines"}, "method": set()}
    assert circles(edges) == [] and circles(package_graph(edges)) == []
    edges["metareward.engines.precision"] = {"metareward.engines.fake", "metareward.training.sft"}
    assert circles(edges) == []  # no module circle ...
    assert circles(package_graph(edges)) == [["engines", "training"]]  # ... but the two packages lean on each other


def test_no_circle_between_subpackages():
    """Not only modules: the library's subpackages import one another one way only."""
    graph_of_packages = package_graph(graph())
    assert {"engines", "training", "runstore", "pipeline"} <= set(graph_of_packages)
    assert circles(graph_of_packages) == []


def test_every_subpackage_says_what_it_holds_and_is_installed():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    installed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(p.parent.relative_to(ROOT).parts) for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")}
    assert packages == installed
    for sub in MAY_IMPORT:
        doc = ast.get_docstring(ast.parse((ROOT / "metareward" / sub / "__init__.py").read_text()))
        assert doc and "import" in doc, sub


def test_a_module_over_400_lines_says_why():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert {name: n for name, n in long.items()
            if "over the usual ~400 lines on purpose" not in modules()[name].read_text()} == {}
