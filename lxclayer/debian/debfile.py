"""Read a .deb's control fields in Python (ar archive -> control.tar.* -> ./control)."""

from __future__ import annotations

import io
import lzma
import tarfile
from pathlib import Path

import zstandard

from .deb822 import paragraphs

AR_MAGIC = b"!<arch>\n"


class DebError(Exception):
    pass


def _decompress(name: str, blob: bytes) -> bytes:
    if name.endswith(".xz"):
        return lzma.decompress(blob)
    if name.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    if name.endswith(".gz"):
        import gzip

        return gzip.decompress(blob)
    if name.endswith(".tar"):
        return blob
    raise DebError(f"unsupported control member {name}")


def control_text(path: Path) -> str:
    """The text of ./control inside the .deb at `path`."""
    for name, blob in _partial_members(path).items():
        if name.startswith("control.tar"):
            with tarfile.open(fileobj=io.BytesIO(_decompress(name, blob))) as tf:
                for m in tf.getmembers():
                    if m.name in ("./control", "control"):
                        f2 = tf.extractfile(m)
                        assert f2 is not None
                        return f2.read().decode("utf-8")
    raise DebError("no control file")


def _partial_members(path: Path) -> dict[str, bytes]:
    """Read members one by one up to control.tar.*, without reading data.tar."""
    out: dict[str, bytes] = {}
    with open(path, "rb") as f:
        if f.read(8) != AR_MAGIC:
            raise DebError("not an ar archive")
        while True:
            header = f.read(60)
            if len(header) < 60:
                break
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            if name.startswith("data.tar"):
                break
            out[name] = f.read(size)
            if size & 1:
                f.read(1)
            if name.startswith("control.tar"):
                break
    return out


def control_fields(path: Path) -> dict[str, str]:
    for p in paragraphs(control_text(path)):
        return p
    raise DebError("empty control file")
