"""`lxclayer lock --upgrade [--layer NAME ...] [--security-only]`: which pins a build re-resolves.

- `--upgrade` alone: every layer's pins are resolved again (the build does not see the lock's).
- `--layer NAME` (repeatable): only those layers' pins are resolved again; every other layer
  keeps the lock's.
- `--security-only`: no solver runs. Every pinned .deb (of the named layers, or of all) that has
  a newer version in a `-security` suite of the template's sources (what `lxclayer outdated
  --security` lists) is pinned to that version, with the sha256, pool path and size of the
  security archive's index; nothing else changes. The build that follows installs exactly those
  pins, so a security update that needs a package not pinned yet fails that build, naming it
  (then run `lxclayer lock --upgrade --layer NAME`).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from .errors import UserError
from .lock.model import Artifact, Lockfile


def check_layers(project, names: list[str]) -> None:
    known = [la.name for la in project.layers]
    for n in names:
        if n not in known:
            raise UserError(f"--layer {n}: template {project.template.name} has no such layer "
                            f"(its layers: {', '.join(known)})")


def without_layers(lock: Lockfile, names: list[str]) -> Lockfile:
    """`lock` without the pins of `names`: a build resolves those layers again."""
    return msgspec.structs.replace(lock, layers={n: la for n, la in lock.layers.items() if n not in names})


def security_pins(project, lock: Lockfile, *, layers: list[str] | None = None, indices=None,
                  log: Callable[[str], None] = lambda m: None) -> tuple[Lockfile, list[tuple[str, Artifact, Artifact]]]:
    """`lock` with every .deb that has a security update pinned to it; and the changes as
    (layer, old, new)."""
    from .outdated import fetch_indices, template_sources

    lines = template_sources(project)
    key = tuple(lines)
    cache = indices if indices is not None else {}
    if key not in cache:
        cache[key] = fetch_indices(lines, project.template.arch, log=log)
    cands = cache[key]
    from .debian.version import compare

    changes = []
    new_layers = {}
    for name, la in lock.layers.items():
        pkgs = la.artifacts.get("packages")
        if not pkgs or (layers and name not in layers):
            new_layers[name] = la
            continue
        out = dict(pkgs)
        for k, a in pkgs.items():
            best = cands.newest(a.name, a.arch, pockets=("security",))
            if best is None or compare(best[0], a.version) <= 0:
                continue
            _version, _suite, p = best
            if "SHA256" not in p or "Filename" not in p:
                continue
            b = Artifact(name=a.name, version=p["Version"], arch=p.get("Architecture", a.arch), sha256=p["SHA256"],
                         source=p["Filename"], size=int(p.get("Size", "0") or 0))
            out[k] = b
            changes.append((name, a, b))
        new_layers[name] = msgspec.structs.replace(la, artifacts={**la.artifacts, "packages": out})
    return msgspec.structs.replace(lock, layers=new_layers), changes


def pins_for(project, lock: Lockfile | None, *, layers: list[str], security_only: bool,
             log: Callable[[str], None] = lambda m: None) -> Lockfile | None:
    """The lock whose pins `lock --upgrade` builds with (None: resolve every layer again)."""
    check_layers(project, layers)
    if lock is None:
        return None
    if security_only:
        return security_pins(project, lock, layers=layers or None, log=log)[0]
    if layers:
        return without_layers(lock, layers)
    return None
