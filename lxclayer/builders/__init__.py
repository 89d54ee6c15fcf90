"""Builders: one module per kind of layer.

A builder module defines:

- ``KIND`` (the ``kind`` in layer.toml) and ``VERSION`` (bumped when its output changes for the
  same inputs; it is part of every input digest it makes);
- ``Settings`` and ``validate``, imported from its kind's module in :mod:`lxclayer.kinds` (the
  settings are definitions' business; definitions import kinds, never builders);
- ``READS_BELOW``: whether what it builds depends on the layers below (then their output
  digests are part of its input digest);
- ``realise(ctx) -> Result``: build the layer (see :mod:`lxclayer.builders.base`);
- optionally ``resolve(ctx) -> artifacts`` (pin what it installs) and
  ``resolved_inputs(ctx) -> dict`` (facts read from the stack below that its output depends on).

Adding a kind is a module here and one in :mod:`lxclayer.kinds`, each named in its ``MODULES``.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

MODULES = ("files", "importtar", "mmdebstrap", "apt", "uv", "script")


@cache
def registry() -> dict[str, ModuleType]:
    kinds: dict[str, ModuleType] = {}
    for name in MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # not written yet
            raise
        kinds[mod.KIND] = mod
    return kinds


def builder(kind: str) -> ModuleType:
    return registry()[kind]
