"""The source files of a layer folder: what a layer's input digest reads from the checkout.

Every file beside layer.toml (at any depth) is a source. Its identity is its content, with CRLF
line endings of text made LF, and whether it is executable; never its mtime, owner or other
mode bits (a checkout sets those from the umask and the clock). A symlink is a source too,
by its target, and must not point outside the layer folder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec

from .definitions import LAYER_FILE, rel
from .digest import digest_bytes, normalise_text
from .errors import DefinitionError


class Source(msgspec.Struct, frozen=True, omit_defaults=True):
    hash: str = ""
    executable: bool = False
    target: str = ""  # set for symlinks

    def lock_value(self) -> str:
        if self.target:
            return f"-> {self.target}"
        return f"{self.hash} x" if self.executable else self.hash


def read_source(path: Path) -> bytes:
    return normalise_text(path.read_bytes())


def scan_sources(folder: Path, root: Path) -> dict[str, Source]:
    """relative path -> Source, for every file and symlink in `folder` except layer.toml."""
    out: dict[str, Source] = {}
    base = folder.resolve()

    def walk(d: Path, prefix: str) -> None:
        try:
            children = sorted(os.scandir(d), key=lambda x: x.name)
        except OSError as e:
            raise DefinitionError(f"cannot read folder: {e.strerror}", file=rel(d, root)) from None
        for c in children:
            relpath = f"{prefix}{c.name}"
            if relpath == LAYER_FILE or c.name in (".git", "__pycache__") or c.name.endswith((".pyc", "~")):
                continue
            p = Path(c.path)
            st = c.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                resolved = (p.parent / target).resolve() if not os.path.isabs(target) else Path(target)
                if os.path.isabs(target) or not (resolved == base or base in resolved.parents):
                    raise DefinitionError(
                        f"symlink to {target!r} points outside the layer folder",
                        file=rel(p, root),
                    )
                out[relpath] = Source(target=target)
            elif stat.S_ISDIR(st.st_mode):
                walk(p, relpath + "/")
            elif stat.S_ISREG(st.st_mode):
                out[relpath] = Source(
                    hash=digest_bytes(read_source(p)), executable=bool(st.st_mode & stat.S_IXUSR)
                )
            else:
                raise DefinitionError("not a regular file, folder or symlink", file=rel(p, root))

    walk(folder, "")
    return out
