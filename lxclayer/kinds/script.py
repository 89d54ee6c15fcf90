"""`kind = "script"`: its settings and their validation, in definitions' terms (see lxclayer.kinds)."""

from __future__ import annotations

from pathlib import PurePosixPath

from ..errors import DefinitionError
from .base import BuilderSpec, Layer, LayerSpec

KIND = "script"
SPEC = BuilderSpec(version=1, reads_below=True)


class Settings(LayerSpec, tag=KIND):
    script: str  # a file beside layer.toml
    network: bool = False
    env: dict[str, str] = {}


def validate(layer: Layer, shown_file: str) -> None:
    s: Settings = layer.spec  # type: ignore[assignment]
    p = PurePosixPath(s.script)
    if not s.script or p.is_absolute() or ".." in p.parts:
        raise DefinitionError("must be a file inside the layer folder", file=shown_file, key="script")
    if not (layer.dir / s.script).is_file():
        raise DefinitionError(f"file {s.script!r} not found beside layer.toml", file=shown_file, key="script")
    for k in s.env:
        if not k or not (k[0].isalpha() or k[0] == "_") or not all(c.isalnum() or c == "_" for c in k):
            raise DefinitionError(f"{k!r} is not an environment variable name", file=shown_file, key=f"env.{k}")
