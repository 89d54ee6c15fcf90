"""`kind = "mmdebstrap"`: its settings and their validation, in definitions' terms (see lxclayer.kinds)."""

from __future__ import annotations

import re

import msgspec

from ..debian.apt import (
    PKG_NAME_RE,
    VARIANTS,
    parse_source_line,
)
from ..errors import DefinitionError
from .base import BuilderSpec, Layer, LayerSpec

KIND = "mmdebstrap"
SPEC = BuilderSpec(version=1, reads_below=False, pins=True, facts=True)
SUITE_RE = re.compile(r"^[a-z0-9][a-z0-9.+_/-]*$")
COMPONENT_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]*$")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class Settings(LayerSpec, tag=KIND):
    suite: str
    variant: str = "minbase"
    components: list[str] = msgspec.field(default_factory=lambda: ["main"])
    # Each an archive URL (then `deb URL suite components`) or a whole `deb ...` sources line.
    mirrors: list[str] = msgspec.field(default_factory=lambda: [DEFAULT_MIRROR])
    packages: list[str] = []


def is_line(m: str) -> bool:
    return m.startswith(("deb ", "deb\t"))


def validate(layer: Layer, shown_file: str) -> None:
    s: Settings = layer.spec  # type: ignore[assignment]
    if not SUITE_RE.match(s.suite):
        raise DefinitionError(f"{s.suite!r} is not a suite name like \"bookworm\"", file=shown_file, key="suite")
    if s.variant not in VARIANTS or VARIANTS[s.variant] is None:
        known = ", ".join(k for k, v in VARIANTS.items() if v is not None)
        raise DefinitionError(f"unknown variant {s.variant!r} (one of: {known})", file=shown_file, key="variant")
    if not s.components:
        raise DefinitionError("at least one component is needed", file=shown_file, key="components")
    for i, c in enumerate(s.components):
        if not COMPONENT_RE.match(c):
            raise DefinitionError(f"{c!r} is not a component name", file=shown_file, key=f"components[{i}]")
    if not s.mirrors:
        raise DefinitionError("at least one mirror is needed", file=shown_file, key="mirrors")
    for i, m in enumerate(s.mirrors):
        if is_line(m):
            try:
                parse_source_line(m)
            except ValueError as e:
                raise DefinitionError(f"bad sources line: {e}", file=shown_file, key=f"mirrors[{i}]") from None
        elif not re.match(r"^(https?|file)://\S+$", m):
            raise DefinitionError(
                f"{m!r} is neither an http(s):// or file:// URL nor a 'deb ...' sources line",
                file=shown_file, key=f"mirrors[{i}]",
            )
    for i, p in enumerate(s.packages):
        if "=" in p:
            raise DefinitionError(
                f"{p!r}: give package names only; versions are pinned by the lockfile",
                file=shown_file, key=f"packages[{i}]",
            )
        if not PKG_NAME_RE.match(p):
            raise DefinitionError(f"{p!r} is not a Debian package name", file=shown_file, key=f"packages[{i}]")
    if len(set(s.packages)) != len(s.packages):
        dup = next(p for p in s.packages if s.packages.count(p) > 1)
        raise DefinitionError(f"{dup!r} is listed twice", file=shown_file, key="packages")
