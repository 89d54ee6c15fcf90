"""`kind = "files"`: its settings and their validation, in definitions' terms (see lxclayer.kinds)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from ..errors import DefinitionError
from ..sources import ignored_under, shown_name
from .base import BuilderSpec, Layer, LayerSpec, container_path, parse_mode

KIND = "files"
SPEC = BuilderSpec(version=1, reads_below=False, facts=True)
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$")  # a user or group name (as useradd takes it)


class Rule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    path: str  # a glob on the container path: `*` within one component, `**` across them
    mode: str | int | None = None
    owner: str | int | None = None
    group: str | int | None = None


class Settings(LayerSpec, tag=KIND):
    root: str = "root"
    modes: list[Rule] = []
    delete: list[str] = []
    symlinks: dict[str, str] = {}


def is_id(value: str) -> bool:
    """Whether an owner or group written as a string is a number (ASCII digits only: "²" is
    a digit to Python but no id)."""
    return value.isascii() and value.isdigit()


def validate(layer: Layer, shown: str) -> None:
    s: Settings = layer.spec  # type: ignore[assignment]
    rootdir = root_dir(layer, shown)
    if rootdir is not None and not rootdir.is_dir():
        raise DefinitionError(
            f"folder {s.root!r} does not exist beside layer.toml", file=shown, key="root"
        )
    if rootdir is not None:
        # Everything under root/ is shipped; what sources leave out (caches, editor backups)
        # would be missing from the archive without a word, so it is refused.
        bad = ignored_under(rootdir)
        if bad is not None:
            raise DefinitionError(
                f"{shown_name(bad.relative_to(layer.dir))} would not be shipped (.git, __pycache__, *.pyc "
                "and *~ are never layer sources); remove it or move it out of the folder",
                file=shown, key="root",
            )
    for i, r in enumerate(s.modes):
        container_path(r.path, file=shown, key=f"modes[{i}].path")
        if r.mode is not None:
            parse_mode(r.mode, file=shown, key=f"modes[{i}].mode")
        for attr in ("owner", "group"):
            v = getattr(r, attr)
            key = f"modes[{i}].{attr}"
            if isinstance(v, str) and is_id(v):
                v = int(v)
            if isinstance(v, int) and not 0 <= v <= 65535:
                raise DefinitionError("ids must be within 0..65535", file=shown, key=key)
            if isinstance(v, str) and not NAME_RE.match(v):
                raise DefinitionError(f"{v!r} is neither an id (0..65535) nor a user or group name",
                                      file=shown, key=key)
    for i, d in enumerate(s.delete):
        container_path(d, file=shown, key=f"delete[{i}]")
    for link, target in s.symlinks.items():
        container_path(link, file=shown, key=f"symlinks.{link}")
        if not target or "\0" in target:
            raise DefinitionError("a symlink needs a target", file=shown, key=f"symlinks.{link}")


def root_dir(layer: Layer, shown: str) -> Path | None:
    s: Settings = layer.spec  # type: ignore[assignment]
    if ".." in Path(s.root).parts or Path(s.root).is_absolute():
        raise DefinitionError("must be a folder inside the layer folder", file=shown, key="root")
    d = layer.dir / s.root
    if not d.exists() and (s.symlinks or s.delete) and s.root == "root":
        return None  # a layer that only deletes or links needs no tree
    return d
