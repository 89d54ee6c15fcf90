"""The source files of a layer folder: what a layer's input digest reads from the checkout.

Every file beside layer.toml (at any depth) is a source. Its identity is its content, with CRLF
line endings of text made LF, and whether it is executable; never its mtime, owner or other
mode bits (a checkout sets those from the umask and the clock). A symlink is a source too,
by its target, and must not point outside the layer folder.
"""

import os
import stat
import time
from pathlib import Path

import msgspec
import xxhash

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


class StatCache:
    """Content hashes of source files keyed by what stat says (device, inode, size, mtime, ctime),
    so that a no-op build does not read every source again. A file changed within the last
    two seconds is read anyway: its mtime may not yet tell a later change from this one."""

    RACY_NS = 2_000_000_000

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, tuple[int, int, int, int, int, str]] = {}
        self.dirty = False
        if path is not None:
            try:
                self.entries = msgspec.msgpack.decode(path.read_bytes(), type=dict[str, tuple[int, int, int, int, int, str]])
            except (FileNotFoundError, msgspec.DecodeError, ValueError):
                self.entries = {}

    def hash(self, p: Path, st: os.stat_result) -> str:
        key = str(p)
        sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        hit = self.entries.get(key)
        if hit is not None and hit[:5] == sig:
            return hit[5]
        h = digest_bytes(read_source(p))
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > self.RACY_NS:
            self.entries[key] = (*sig, h)
            self.dirty = True
        return h

    def save(self) -> None:
        if self.path is not None and self.dirty:
            from .store import atomic_write

            atomic_write(self.path, msgspec.msgpack.encode(self.entries))
            self.dirty = False


def cache_for(store_root: Path, project_root: Path) -> StatCache:
    key = xxhash.xxh3_64_hexdigest(str(project_root.resolve()).encode())
    return StatCache(store_root / "statcache" / f"{key}.msgpack")


def scan_sources(folder: Path, root: Path, cache: StatCache | None = None) -> dict[str, Source]:
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
                h = cache.hash(p, st) if cache is not None else digest_bytes(read_source(p))
                out[relpath] = Source(hash=h, executable=bool(st.st_mode & stat.S_IXUSR))
            else:
                raise DefinitionError("not a regular file, folder or symlink", file=rel(p, root))

    walk(folder, "")
    return out
