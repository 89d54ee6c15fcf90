"""Module boundaries of lxclayer/ that the code must keep (issue 22), checked on its source:

- only the store (lxclayer/store/) names paths under the store's root: every other module
  reaches the store's areas through the `Store` interface;
- no module uses another lxclayer module's private names (`from .x import _y`, or `x._y` on an
  imported module): what crosses a module's edge is public;
- no import cycle among lxclayer's modules, counting every import statement wherever it is (at
  module level, inside a function, under `if TYPE_CHECKING:`): a late import that only dodges a
  cycle hides the cycle, it does not remove it; and none among its packages (folders), so that
  e.g. builders/ may use debian/ and realise/ but neither of those uses builders/;
- the store (lxclayer/store/) imports nothing of the lockfile (lxclayer/lock/), at any level.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "lxclayer"
STORE_ROOT = re.compile(r"\bstore\.root\b|\bstore_root\)?\s*/")


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of lxclayer/."""
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def resolve(mod: str, f: Path, node: ast.ImportFrom) -> str | None:
    """The absolute module an ImportFrom names (None: not lxclayer's)."""
    if node.level == 0:
        base = node.module or ""
    else:
        package = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    return base if base == "lxclayer" or base.startswith("lxclayer.") else None


def imports(mod: str, f: Path, known: dict[str, Path]) -> dict[str, str]:
    """The lxclayer modules `mod` imports, each with where it first does (`mod:line`), from
    every import statement in the file. Importing `a.b.c` runs `a.b` (a package's __init__) too."""
    out: dict[str, str] = {}

    def add(target: str, line: int) -> None:
        parts = target.split(".")
        for i in range(2, len(parts) + 1):
            t = ".".join(parts[:i])
            # (a module's own packages are running already when it is imported)
            if t in known and t != mod and not mod.startswith(t + "."):
                out.setdefault(t, f"{mod}:{line}")

    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.ImportFrom):
            src = resolve(mod, f, node)
            if src is not None:
                for a in node.names:
                    add(f"{src}.{a.name}" if f"{src}.{a.name}" in known else src, node.lineno)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("lxclayer."):
                    add(a.name, node.lineno)
    return out


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected parts of `graph` with more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def shown_cycles(graph: dict[str, dict[str, str]]) -> list[str]:
    """Each cycle as the imports that make it (`a -> b (at a:12)`)."""
    return ["; ".join(f"{a} -> {b} (at {where})" for a in part for b, where in sorted(graph[a].items()) if b in part)
            for part in cycles(graph)]


def module_graph() -> dict[str, dict[str, str]]:
    known = modules()
    return {mod: imports(mod, f, known) for mod, f in known.items()}


def package_graph(graph: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The import graph between lxclayer's packages (its folders: builders, debian, store, ...)."""
    packages = {".".join(f.relative_to(PKG.parent).parts[:2]) for f in PKG.glob("*/__init__.py")}

    def package(mod: str) -> str | None:
        p = ".".join(mod.split(".")[:2])
        return p if p in packages else None

    out: dict[str, dict[str, str]] = {p: {} for p in packages}
    for a, targets in graph.items():
        for b, where in targets.items():
            pa, pb = package(a), package(b)
            if pa and pb and pa != pb:
                out[pa].setdefault(pb, f"{where} -> {b}")
    return out


def private_uses(mod: str, f: Path, known: dict[str, Path]) -> list[str]:
    tree = ast.parse(f.read_text(), str(f))
    found = []
    module_names: dict[str, str] = {}  # local name -> lxclayer module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            src = resolve(mod, f, node)
            if src is None:
                continue
            for a in node.names:
                sub = f"{src}.{a.name}"
                if sub in known:  # `from . import oci`: a module
                    module_names[a.asname or a.name] = sub
                if private(a.name) and src != mod:
                    found.append(f"{mod}:{node.lineno}: from {src} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("lxclayer.") and a.asname:
                    module_names[a.asname] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in module_names and private(node.attr)
                and module_names[node.value.id] != mod):
            found.append(f"{mod}:{node.lineno}: {module_names[node.value.id]}.{node.attr}")
    return found


def test_only_the_store_names_paths_under_its_root():
    offenders = []
    for mod, f in modules().items():
        if mod == "lxclayer.store" or mod.startswith("lxclayer.store."):
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if STORE_ROOT.search(line):
                offenders.append(f"{f.relative_to(PKG.parent)}:{i}: {line.strip()}")
    assert offenders == []


def test_no_module_uses_another_modules_private_names():
    known = modules()
    offenders = [use for mod, f in known.items() for use in private_uses(mod, f, known)]
    assert offenders == []


def imported(mod: str, f: Path) -> set[str]:
    """Every lxclayer module `f` imports, at module level or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.ImportFrom):
            src = resolve(mod, f, node)
            if src is not None:
                out |= {src, *(f"{src}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("lxclayer")}
    return out


def test_the_store_imports_nothing_of_the_lockfile():
    offenders = sorted(f"{mod}: {name}" for mod, f in modules().items()
                       if mod == "lxclayer.store" or mod.startswith("lxclayer.store.")
                       for name in imported(mod, f) if name == "lxclayer.lock" or name.startswith("lxclayer.lock."))
    assert offenders == []


def test_no_import_cycle_even_through_a_late_import():
    assert shown_cycles(module_graph()) == []


def test_no_two_packages_import_each_other():
    assert shown_cycles(package_graph(module_graph())) == []


def test_the_checks_catch_what_they_look_for(tmp_path):
    """Both checks see the forms they forbid (so that an empty list above means something)."""
    f = tmp_path / "m.py"
    f.write_text("from .outputs import oci\nfrom .kinds.apt import _key_path\nx = oci._MediaTypeOnly\n")
    known = {"lxclayer.outputs.oci": f, "lxclayer.m": f}
    assert private_uses("lxclayer.m", f, known) == [
        "lxclayer.m:2: from lxclayer.kinds.apt import _key_path",
        "lxclayer.m:3: lxclayer.outputs.oci._MediaTypeOnly",
    ]
    assert STORE_ROOT.search('d = store.root / "tmp"') and STORE_ROOT.search("p = store_root / 'x'")
    assert STORE_ROOT.search('return Path(store_root) / "logs"')
    assert not STORE_ROOT.search("for root in store.roots():")
    g = tmp_path / "s.py"
    g.write_text("def f():\n    from ..lock.model import Artifact\n")
    assert "lxclayer.lock.model" in imported("lxclayer.store.s", g)
    # an import inside a function, and one only for the type checker, are edges too
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("from . import b\n")
    b.write_text("def f():\n    from .c import g\n")
    c.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lxclayer.a import A\n")
    known = {"lxclayer.a": a, "lxclayer.b": b, "lxclayer.c": c}
    graph = {m: imports(m, f, known) for m, f in known.items()}
    assert shown_cycles(graph) == ["lxclayer.a -> lxclayer.b (at lxclayer.a:1); lxclayer.b -> lxclayer.c (at lxclayer.b:2);"
                                   " lxclayer.c -> lxclayer.a (at lxclayer.c:3)"]


def test_each_builder_has_what_its_kinds_spec_says():
    """Evaluation reads a kind's BuilderSpec instead of its builder: the two must agree (a
    builder with `resolve` whose spec says no pins would have its pins ignored)."""
    from lxclayer import builders, kinds

    assert sorted(builders.registry()) == kinds.names()
    for name in kinds.names():
        spec, mod = kinds.spec(name), builders.builder(name)
        assert (hasattr(mod, "resolve"), hasattr(mod, "resolved_inputs")) == (spec.pins, spec.facts), name
        assert not hasattr(mod, "VERSION") and not hasattr(mod, "READS_BELOW"), name  # one source of truth
