"""`kind = "uv"`: its settings and their validation, in definitions' terms (see lxclayer.kinds)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import msgspec

from ..errors import DefinitionError
from .base import BuilderSpec, Layer, LayerSpec, container_path

KIND = "uv"
SPEC = BuilderSpec(version=1, reads_below=True, pins=True)
VERSION_RE = re.compile(r"^\d+(\.\d+){1,3}([a-z0-9.+-]*)$")
VENV_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DEFAULT_INDEX = "https://pypi.org/simple"


class Venv(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    path: str  # in the container
    requirements: str  # a requirements file (uv pip compile input) beside layer.toml


class Settings(LayerSpec, tag=KIND):
    uv_version: str
    python: str = "/usr/bin/python3"
    venvs: dict[str, Venv] = {}
    index_url: str = DEFAULT_INDEX
    compile_bytecode: bool = True


def validate(layer: Layer, shown_file: str) -> None:
    s: Settings = layer.spec  # type: ignore[assignment]
    if not VERSION_RE.match(s.uv_version):
        raise DefinitionError(f"{s.uv_version!r} is not a uv version like \"0.13.9\"", file=shown_file, key="uv_version")
    if not s.python.startswith("/"):
        raise DefinitionError("must be an absolute path in the container", file=shown_file, key="python")
    container_path(s.python, file=shown_file, key="python")
    if not re.match(r"^https?://\S+$", s.index_url):
        raise DefinitionError("must be an http(s):// URL of a simple index", file=shown_file, key="index_url")
    paths: dict[str, str] = {}
    for name, v in s.venvs.items():
        k = f"venvs.{name}"
        if not VENV_NAME_RE.match(name):
            raise DefinitionError(f"{name!r} is not a venv name (letters, digits, '.', '_', '-')", file=shown_file, key=k)
        if not v.path.startswith("/"):
            raise DefinitionError("must be an absolute path in the container", file=shown_file, key=f"{k}.path")
        p = container_path(v.path, file=shown_file, key=f"{k}.path")
        for other, op in paths.items():
            if p == op or p.startswith(op + "/") or op.startswith(p + "/"):
                raise DefinitionError(f"overlaps venv {other!r} ({'/' + op})", file=shown_file, key=f"{k}.path")
        paths[name] = p
        rp = PurePosixPath(v.requirements)
        if not v.requirements or rp.is_absolute() or ".." in rp.parts:
            raise DefinitionError("must be a file inside the layer folder", file=shown_file, key=f"{k}.requirements")
        if not (layer.dir / v.requirements).is_file():
            raise DefinitionError(f"file {v.requirements!r} not found beside layer.toml", file=shown_file,
                                  key=f"{k}.requirements")


# --- the target: the container's Python and platform -----------------------------------------
