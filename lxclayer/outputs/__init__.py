"""Outputs: exporters registered by format, each owning its file name, its lock entry, what it
keeps in the store and its check (see :mod:`.base`).

Adding a format is one module with an :class:`~.base.Exporter` and one line in `FORMATS`. The
registry names formats without importing their modules, so loading a definition stays cheap.
"""

from __future__ import annotations

import importlib

from ..errors import UserError
from .base import ArchiveInfo, Exporter, ExportJob

# format -> module under lxclayer.outputs that defines EXPORTERS (a dict format -> Exporter)
FORMATS: dict[str, str] = {
    "tar.gz": "tarball",
    "tar.zst": "tarball",
}


def names() -> list[str]:
    return list(FORMATS)


def exporter(fmt: str) -> Exporter:
    module = FORMATS.get(fmt)
    if module is None:
        raise UserError(f"unknown output format {fmt!r} (known: {', '.join(FORMATS)})")
    return importlib.import_module(f"{__name__}.{module}").EXPORTERS[fmt]


__all__ = ["FORMATS", "ArchiveInfo", "ExportJob", "Exporter", "exporter", "names"]
