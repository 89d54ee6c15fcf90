"""Layer kinds in definitions' terms: each kind's settings (a `LayerSpec` subclass), their
validation and what evaluation needs to know of its builder (`SPEC`, a `BuilderSpec`), one
module per kind. Definitions decode and validate layers with these; builders
(lxclayer.builders, one module per kind) import their settings from here and realise them.
Nothing in this package imports a builder.

Adding a kind is a module here (KIND, SPEC, Settings, validate) and one in lxclayer.builders.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

from .base import BuilderSpec

# kind -> module under lxclayer.kinds
MODULES = {"files": "files", "import": "importtar", "mmdebstrap": "mmdebstrap", "apt": "apt", "uv": "uv",
           "script": "script"}


def names() -> list[str]:
    return sorted(MODULES)


@cache
def kind(name: str) -> ModuleType:
    """The module of a kind: `Settings` and `validate(layer, shown_file)`."""
    return importlib.import_module(f"{__name__}.{MODULES[name]}")


def spec(name: str) -> BuilderSpec:
    """What evaluation knows of the builder of kind `name`: version, reads below, pins, facts."""
    return kind(name).SPEC
