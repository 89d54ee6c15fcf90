"""The source files of a layer folder: what a layer's input digest reads from the checkout.

Every file beside layer.toml (at any depth) is a source. Its identity is its content, with CRLF
line endings of text made LF, and whether it is executable; never its mtime, owner or other
mode bits (a checkout sets those from the umask and the clock). A symlink is a source too,
by its target, and must not point outside the layer folder nor into a loop. An empty folder is
a source too (a files layer ships it). Caches and editor backups (``.git``, ``__pycache__``,
``*.pyc``, ``*~``) are not sources; a builder that would ship them refuses them instead (see
:func:`ignored_under`). A name that is not UTF-8 is refused: the lock and manifests are UTF-8.
"""

import errno
import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import xxhash

from .digest import digest_bytes, normalise_text, seal, unseal
from .errors import DefinitionError
from .kinds.base import LAYER_FILE, rel
from .lock.model import EMPTY_DIR

if TYPE_CHECKING:
    from .store import Store

IGNORED_DIRS = (".git", "__pycache__")
IGNORED_SUFFIXES = (".pyc", "~")


def ignored(name: str) -> bool:
    """Whether a file or folder of this name is left out of a layer's sources."""
    return name in IGNORED_DIRS or name.endswith(IGNORED_SUFFIXES)


class Source(msgspec.Struct, frozen=True, omit_defaults=True):
    hash: str = ""
    executable: bool = False
    target: str = ""  # set for symlinks
    dir: bool = False  # an empty folder

    def lock_value(self) -> str:
        if self.dir:
            return EMPTY_DIR
        if self.target:
            return f"-> {self.target}"
        return f"{self.hash} x" if self.executable else self.hash


def shown_name(path: Path | str) -> str:
    """A path for a message, with bytes that are not UTF-8 written as \\xNN."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


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
            # Sealed: a damaged cache (one flipped bit in a hash) would change a digest silently.
            try:
                payload = unseal(path.read_bytes())
                if payload is not None:
                    self.entries = msgspec.msgpack.decode(payload, type=dict[str, tuple[int, int, int, int, int, str]])
            except (OSError, msgspec.DecodeError, ValueError):
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
            from .fsio import atomic_write

            atomic_write(self.path, seal(msgspec.msgpack.encode(self.entries)))
            self.dirty = False


def cache_for(store: "Store", project_root: Path) -> StatCache:
    """The stat cache of the project at `project_root`, kept in `store`."""
    key = xxhash.xxh3_64_hexdigest(str(project_root.resolve()).encode())
    return StatCache(store.statcache_path(key))


def scan_sources(folder: Path, root: Path, cache: StatCache | None = None) -> dict[str, Source]:
    """relative path -> Source, for every file, symlink and empty folder in `folder` except
    layer.toml and what :func:`ignored` names."""
    out: dict[str, Source] = {}
    base = os.path.abspath(folder)

    def where(p: Path) -> str:
        # rel() resolves; the last component may be a symlink loop, so only its folder is.
        return shown_name(f"{rel(p.parent, root)}/{p.name}")

    def walk(d: Path, prefix: str) -> bool:  # whether it recorded anything below `d`
        try:
            children = sorted(os.scandir(d), key=lambda x: x.name)
        except OSError as e:
            raise DefinitionError(f"cannot read folder: {e.strerror}", file=where(d)) from None
        found = False
        for c in children:
            relpath = f"{prefix}{c.name}"
            p = Path(c.path)
            try:
                c.name.encode("utf-8")
            except UnicodeEncodeError:
                raise DefinitionError("the file name is not UTF-8; rename it", file=where(p)) from None
            if relpath == LAYER_FILE or ignored(c.name):
                continue
            st = c.stat(follow_symlinks=False)
            found = True
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                try:
                    target.encode("utf-8")
                except UnicodeEncodeError:
                    raise DefinitionError("the symlink's target is not UTF-8", file=where(p)) from None
                # Every symlink of the folder is checked, so a lexical check is enough.
                lexical = os.path.normpath(os.path.join(os.path.dirname(c.path), target))
                if os.path.isabs(target) or not (lexical == base or lexical.startswith(base + os.sep)):
                    raise DefinitionError(
                        f"symlink to '{shown_name(target)}' points outside the layer folder", file=where(p),
                    )
                try:
                    os.stat(p)
                except OSError as e:
                    if e.errno == errno.ELOOP:
                        raise DefinitionError(f"symlink to '{shown_name(target)}' is a loop", file=where(p)) from None
                out[relpath] = Source(target=target)
            elif stat.S_ISDIR(st.st_mode):
                if not walk(p, relpath + "/"):
                    out[relpath] = Source(dir=True)
            elif stat.S_ISREG(st.st_mode):
                h = cache.hash(p, st) if cache is not None else digest_bytes(read_source(p))
                out[relpath] = Source(hash=h, executable=bool(st.st_mode & stat.S_IXUSR))
            else:
                raise DefinitionError("not a regular file, folder or symlink", file=where(p))
        return found

    walk(folder, "")
    return out


def ignored_under(folder: Path) -> Path | None:
    """The first file or folder below `folder` that :func:`ignored` leaves out, if any."""
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(dirnames + filenames):
            if ignored(name):
                return Path(dirpath) / name
    return None
