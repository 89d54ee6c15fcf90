"""`kind = "import"`: its settings and their validation, in definitions' terms (see lxclayer.kinds)."""

from __future__ import annotations

from pathlib import PurePosixPath

from ..errors import DefinitionError
from .base import BuilderSpec, Layer, LayerSpec

SHA256_HEX = 64
KIND = "import"
SPEC = BuilderSpec(version=1, reads_below=False, pins=True)


class Settings(LayerSpec, tag=KIND):
    sha256: str
    path: str | None = None  # relative to the layer folder
    url: str | None = None


def validate(layer: Layer, shown: str) -> None:
    s: Settings = layer.spec  # type: ignore[assignment]
    if (s.path is None) == (s.url is None):
        raise DefinitionError("give exactly one of `path` and `url`", file=shown, key="path")
    if len(s.sha256) != SHA256_HEX or any(c not in "0123456789abcdef" for c in s.sha256):
        raise DefinitionError("must be 64 lower-case hex digits", file=shown, key="sha256")
    if s.url is not None and not s.url.startswith(("http://", "https://", "file://")):
        raise DefinitionError("must be an http(s):// or file:// URL", file=shown, key="url")
    if s.path is not None:
        p = PurePosixPath(s.path)
        if p.is_absolute() or ".." in p.parts:
            raise DefinitionError("must be a file inside the layer folder", file=shown, key="path")
        if not (layer.dir / s.path).is_file():
            raise DefinitionError(f"file {s.path!r} not found beside layer.toml", file=shown, key="path")
