"""Outputs: exporters registered by format, each owning its file name, its lock entry, what it
keeps in the store and its check (see :mod:`.base`).

Adding a format is one module with an :class:`~.base.Exporter` and one line in `lxclayer.formats.FORMATS`. The
registry names formats without importing their modules, so loading a definition stays cheap.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..formats import FORMATS
from .base import ArchiveInfo, Exporter, ExportJob

if TYPE_CHECKING:
    from ..check import Violation
    from ..lock.model import Lockfile
    from ..store import LayerEntry, Store

def names() -> list[str]:
    return list(FORMATS)


def compressor_of(fmt: str) -> str | None:
    """The identity of today's compressor of `fmt` as the lock records it (None: unknown format)."""
    return exporter(fmt).compressor() if fmt in FORMATS else None


def exporter(fmt: str) -> Exporter:
    module = FORMATS.get(fmt)
    if module is None:
        raise UserError(f"unknown output format {fmt!r} (known: {', '.join(FORMATS)})")
    return importlib.import_module(f"{__name__}.{module}").EXPORTERS[fmt]


def cache_key(stack_lock: Lockfile, fmt: str) -> str:
    """A name for what format `fmt` keeps in the store for the stack a lock pins (the shared
    cache stores it under this name)."""
    from ..digest import digest
    from ..lock.toml import stack_digest

    return digest({"lock": stack_digest(stack_lock), "format": fmt, "compressor": exporter(fmt).compressor()})


def kept(store: Store, fmt: str, stack_lock: Lockfile, layers: list[LayerEntry]) -> tuple[set[str], set[str]]:
    """The chunks and artifacts format `fmt` keeps in `store` for this stack."""
    from ..store import Keep

    keep = Keep()
    exporter(fmt).keep(store, stack_lock, layers, keep)
    return keep.chunks, keep.artifacts


def format_of(path: Path) -> str:
    """The format a file is in, told the way Proxmox tells it: a plain `.tar` that holds an
    `oci-layout` member is an OCI image (one named `./oci-layout` too: meant as one, and
    then refused by its check); any other name is a root file system archive."""
    if path.name.endswith(".tar"):
        import tarfile

        try:
            with tarfile.open(path, "r:") as tf:
                for m in tf:
                    if m.name.removeprefix("./") == "oci-layout":
                        return "oci"
        except (OSError, tarfile.TarError):
            pass
    return "tar.gz"


def check(path: Path) -> list[Violation]:
    """Check an output file by the rules of its format's consumer."""
    return exporter(format_of(path)).check(path)


__all__ = ["FORMATS", "ArchiveInfo", "ExportJob", "Exporter", "cache_key", "check", "exporter", "format_of",
           "kept", "names"]
