"""Module boundaries of lxclayer/ that the code must keep (issue 22), checked on its source:

- only the store (lxclayer/store/) names paths under the store's root: every other module
  reaches the store's areas through the `Store` interface;
- no module uses another lxclayer module's private names (`from .x import _y`, or `x._y` on an
  imported module): what crosses a module's edge is public.
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


def test_each_builder_has_what_its_kinds_spec_says():
    """Evaluation reads a kind's BuilderSpec instead of its builder: the two must agree (a
    builder with `resolve` whose spec says no pins would have its pins ignored)."""
    from lxclayer import builders, kinds

    assert sorted(builders.registry()) == kinds.names()
    for name in kinds.names():
        spec, mod = kinds.spec(name), builders.builder(name)
        assert (hasattr(mod, "resolve"), hasattr(mod, "resolved_inputs")) == (spec.pins, spec.facts), name
        assert not hasattr(mod, "VERSION") and not hasattr(mod, "READS_BELOW"), name  # one source of truth
