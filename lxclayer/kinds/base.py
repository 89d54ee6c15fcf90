"""What every layer kind shares, in definitions' terms: the settings base class, a loaded
layer, and the checks of paths and modes that kinds' validation uses.

Kinds (one module each beside this one) import only this module, the errors and what they
check against; definitions imports the kinds. Nothing here imports a builder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import msgspec

from ..errors import DefinitionError

LAYER_FILE = "layer.toml"
MODE_RE = re.compile(r"^0?[0-7]{3,4}$")


class BuilderSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What evaluation knows of a kind's builder without importing it (the builder, in
    lxclayer.builders, has the code; a test checks that the two agree)."""

    # Bumped when the builder's output changes for the same inputs: part of every input digest
    # it makes (`kind/version`, the record's `builder`).
    version: int
    # Its output depends on the layers below: their output digests are part of its input digest.
    reads_below: bool
    # It pins what it installs (`resolve(ctx)`): the lock's pins hold while settings and sources do.
    pins: bool = False
    # It reads facts its output depends on from the stack below or the host
    # (`resolved_inputs(ctx)`): part of the input record (`resolved`) and the lock.
    facts: bool = False


class LayerSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="kind"):
    """Settings every layer kind has. Builders subclass it with `tag="<kind>"`."""

    description: str = ""
    # Layers that must stand below this one in the stack.
    requires: list[str] = []


@dataclass(frozen=True)
class Layer:
    name: str
    dir: Path
    file: Path
    spec: LayerSpec

    @property
    def kind(self) -> str:
        return type(self.spec).__struct_config__.tag  # type: ignore[attr-defined]


def rel(path: Path, root: Path | None = None) -> str:
    """A path as the user should see it in a message: relative to `root` or the cwd if inside."""
    for base in (root, Path.cwd()):
        if base is None:
            continue
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def container_path(value: str, *, file: str, key: str) -> str:
    """Normalise a path inside the root file system: `/etc/x` and `etc/x` both give `etc/x`.

    Refuses empty paths, NUL bytes, and any `..` component (a path must not leave the root)."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise DefinitionError("must be a non-empty path", file=file, key=key)
    parts = [p for p in PurePosixPath(value).parts if p not in ("/", ".")]
    if any(p == ".." for p in parts):
        raise DefinitionError(f"path {value!r} leaves the root file system ('..')", file=file, key=key)
    if not parts:
        raise DefinitionError(f"path {value!r} names the root itself", file=file, key=key)
    return "/".join(parts)


def parse_mode(value: str | int, *, file: str, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 0o7777:
            return value
    elif isinstance(value, str) and MODE_RE.match(value):
        return int(value, 8)
    raise DefinitionError(
        f"mode {value!r} is not an octal mode like \"0644\" or 0o644", file=file, key=key
    )
