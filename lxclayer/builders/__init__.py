"""Builders: one module per kind of layer.

A builder module defines:

- ``KIND`` (the ``kind`` in layer.toml);
- ``Settings`` and ``validate``, imported from its kind's module in :mod:`lxclayer.kinds` (the
  settings are definitions' business; definitions import kinds, never builders);
- ``realise(ctx) -> Result``: build the layer (see :mod:`lxclayer.realise.context`);
- ``resolve(ctx) -> artifacts`` (pin what it installs) when its kind's spec says ``pins``, and
  ``resolved_inputs(ctx) -> dict`` (facts read from the stack below or the host that its output
  depends on) when it says ``facts``.

What evaluation needs to know of a builder is its kind's ``SPEC`` (a
:class:`lxclayer.kinds.base.BuilderSpec`: ``version``, bumped when the output changes for the
same inputs and part of every input digest; ``reads_below``, whether the output digests of the
layers below are part of its input digest; ``pins``; ``facts``), so that evaluation imports no
builder. A test checks that each builder has ``resolve`` and ``resolved_inputs`` as its spec says.

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
