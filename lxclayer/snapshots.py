"""Snapshots: a store entry unpacked once into a plain directory, as an overlayfs layer.

Part of realisation (issue 11). A program layer is to run in an overlay mount whose lower
directories are the snapshots of the layers below, so that only the overlay's upper directory
has to be scanned. A snapshot is a *cache* of a store entry, never the truth:

- it lives beside the store's entries, in ``<store>/snapshots/<input digest>/`` holding
  ``root/`` (the layer's own entries: whiteouts as char 0:0 devices, owners, modes, xattrs and
  device nodes as they are) and ``index`` (per path: type, mode, owner, size, ctime, inode);
- it is made in ``<store>/snapshots/.tmp-<pid>-<n>/`` and appears by one ``rename``, so a
  killed build leaves only a ``.tmp-*`` folder that nothing trusts (and :func:`ensure` sweeps);
- before use, :func:`ensure` compares every path's ``lstat`` against the index (no content is
  read): a snapshot changed behind lxclayer's back (a file edited, added or removed, a changed
  owner or mode) fails the check, is removed and made again from the store entry;
- file contents are copied, never hard-linked into the store's blobs (a program running on the
  overlay could otherwise change a blob through a lower layer's inode).

A directory the layer only implies (``implicit``, or a missing parent) takes the owner, mode,
xattrs and mtime of that directory in the stack below: overlayfs shows the topmost directory's
attributes, and the manifest says such a directory does not change them.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from .errors import BuildError, StoreCorruption
from .fsio import pid_alive, rmtree
from .manifest import Entry, find, parent_of, sort_key
from .materialise import UnsafePath, materialise
from .scan import kept_xattr
from .store import Store

ENV = "LXCLAYER_SNAPSHOTS"
INDEX = "index"
ROOT = "root"


class Stat(msgspec.Struct, array_like=True, frozen=True):
    """What the cheap check compares for one path (ctime changes with any write, chmod, chown,
    xattr change or rename; the inode with a delete and re-create)."""

    fmt: int
    mode: int
    uid: int
    gid: int
    size: int
    ctime_ns: int
    ino: int


class Index(msgspec.Struct, frozen=True):
    output: str  # the store entry's output digest this snapshot was made from
    paths: dict[str, Stat]


_index_enc = msgspec.msgpack.Encoder()
_index_dec = msgspec.msgpack.Decoder(Index)
_counter = itertools.count()


def snapshots_dir(store: Store) -> Path:
    return store.snapshots_dir()


def snapshot_dir(store: Store, input_digest: str) -> Path:
    return snapshots_dir(store) / input_digest


def take_index(root: Path) -> dict[str, Stat]:
    """`lstat` of every path below `root` (and `root` itself, as "")."""
    out: dict[str, Stat] = {}

    def add(path: str, st: os.stat_result) -> None:
        out[path] = Stat(stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                         st.st_size if stat.S_ISREG(st.st_mode) else 0, st.st_ctime_ns, st.st_ino)

    add("", os.lstat(root))
    stack = [(str(root), "")]
    while stack:
        dirpath, rel = stack.pop()
        with os.scandir(dirpath) as it:
            for d in it:
                path = f"{rel}/{d.name}" if rel else d.name
                st = d.stat(follow_symlinks=False)
                add(path, st)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((d.path, path))
    return out


def layer_entries(entries: list[Entry], lower: Callable[[str], Entry | None], *, mtime: int) -> list[Entry]:
    """The layer's entries as its overlay layer holds them: implicit and missing parent
    directories carry the attributes of the stack below (`lower(path)`), else 0755 root."""
    by_path = {e.path: e for e in entries}
    out: dict[str, Entry] = {}

    def implied(path: str) -> Entry:
        below = lower(path)
        if below is not None and below.type == "dir":
            return msgspec.structs.replace(below, implicit=False)
        return Entry(path=path, type="dir", mode=0o755, mtime=mtime)

    def under_non_dir(path: str) -> bool:
        p = parent_of(path)
        while p:
            if p in by_path and by_path[p].type != "dir":
                return True
            p = parent_of(p)
        return False

    for e in entries:
        if e.type == "whiteout" and under_non_dir(e.path):
            continue  # a directory replaced by a file: the file hides all that was below
        p = parent_of(e.path)
        while p and p not in by_path and p not in out:
            out[p] = implied(p)
            p = parent_of(p)
        out[e.path] = implied(e.path) if e.type == "dir" and e.implicit else e
    return sorted(out.values(), key=lambda e: sort_key(e.path))


def make(store: Store, input_digest: str, output: str, entries: list[Entry],
         lower: Callable[[str], Entry | None], *, mtime: int) -> Path:
    """Unpack `entries` into a new snapshot and publish it atomically; returns its root."""
    base = snapshots_dir(store)
    base.mkdir(exist_ok=True)
    tmp = base / f".tmp-{os.getpid()}-{next(_counter)}"
    rmtree(tmp)
    try:
        tmp.mkdir()
        root = tmp / ROOT
        # Written beneath `root` only, never through a symlink or `..` (materialise), whiteouts
        # as char 0:0 devices; directories' mtimes last, after everything inside them.
        materialise(layer_entries(entries, lower, mtime=mtime), root, store, whiteouts=True)
        final = _publish(store, input_digest, output, tmp, mtime)
    except OSError as e:
        rmtree(tmp)
        raise BuildError(f"cannot make the snapshot of layer {input_digest[:16]}: {e.strerror or e}") from None
    except UnsafePath as e:
        # An entry published before the store had its entry gate: damage, removed and built again.
        rmtree(tmp)
        raise StoreCorruption(f"entry would write outside its snapshot: {e.reason}",
                              entry=str(store.layer_dir(input_digest))) from None
    except BaseException:
        rmtree(tmp)
        raise
    return final / ROOT


def _publish(store: Store, input_digest: str, output: str, tmp: Path, mtime: int) -> Path:
    """Index the snapshot made in `tmp` and rename it into place; the snapshot's folder. One
    made meanwhile by another build (which may be using it) is kept, and `tmp` removed."""
    root = tmp / ROOT
    os.utime(root, (mtime, mtime))
    (tmp / INDEX).write_bytes(_index_enc.encode(Index(output=output, paths=take_index(root))))
    final = snapshot_dir(store, input_digest)
    try:
        os.rename(tmp, final)
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        rmtree(tmp)
    return final


def adopt(store: Store, input_digest: str, output: str, upper: Path, *, mtime: int) -> Path:
    """Make the upper directory a layer was just built in (on an overlay of the snapshots below,
    unmounted now) that layer's snapshot, by moving it: no copy. Its merged view with the
    snapshots below is then what the store entry says once the upper directory is brought to
    the entry's terms: mtimes clamped to `mtime`, sockets and the contents of the run-time
    folders removed, xattrs the manifest does not keep removed (of overlayfs's own, only the
    opaque mark stays). Appears atomically like :func:`make`."""
    base = snapshots_dir(store)
    base.mkdir(exist_ok=True)
    tmp = base / f".tmp-{os.getpid()}-{next(_counter)}"
    try:
        tmp.mkdir()
        root = tmp / ROOT
        os.rename(upper, root)
        # Walked by directory descriptors, never following a symlink out of the tree.
        for dirpath, dirs, files, dfd in os.fwalk(root, topdown=False, follow_symlinks=False):
            rel = os.path.relpath(dirpath, root)
            for name in itertools.chain(files, dirs):
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISSOCK(st.st_mode) or _runtime(rel, name):
                    if stat.S_ISDIR(st.st_mode):
                        shutil.rmtree(name, dir_fd=dfd)
                    else:
                        os.unlink(name, dir_fd=dfd)
                    continue
                if not stat.S_ISLNK(st.st_mode):
                    p = f"/proc/self/fd/{dfd}/{name}"
                    for x in os.listxattr(p, follow_symlinks=False):
                        if x != OPAQUE and not kept_xattr(x):
                            os.removexattr(p, x, follow_symlinks=False)
                if st.st_mtime_ns > mtime * 1_000_000_000:
                    os.utime(name, (mtime, mtime), dir_fd=dfd, follow_symlinks=False)
        return _publish(store, input_digest, output, tmp, mtime) / ROOT
    except BaseException:
        rmtree(tmp)
        raise


def _runtime(rel: str, name: str) -> bool:
    """Inside dev, proc or sys (never part of a layer; see lxclayer.realise.program.RUNTIME_DIRS)."""
    head = (name if rel == "." else rel).split("/", 1)[0]
    return rel != "." and head in ("dev", "proc", "sys")


def check(store: Store, input_digest: str, output: str) -> str | None:
    """None if the snapshot is usable, else why not (reads only metadata)."""
    d = snapshot_dir(store, input_digest)
    try:
        index = _index_dec.decode((d / INDEX).read_bytes())
    except FileNotFoundError:
        return "missing"
    except (OSError, msgspec.DecodeError):
        return "its index is unreadable"
    if index.output != output:
        return "it was made from another output"
    try:
        now = take_index(d / ROOT)
    except OSError:
        return "it cannot be read"
    if now == index.paths:
        return None
    changed = sorted(set(now) ^ set(index.paths)) or sorted(p for p in now if now[p] != index.paths[p])
    return f"{changed[0] or '/'} changed since it was made"


def ensure(store: Store, input_digest: str, output: str, entries: Callable[[], list[Entry]],
           lower: Callable[[str], Entry | None], *, mtime: int,
           log: Callable[[str], None] = lambda m: None, checked: dict[str, tuple] | None = None) -> Path:
    """The root of a verified snapshot of one store entry, made (again) if needed.

    `checked` (one build's :attr:`Policy.checked`) remembers the snapshots this build has
    verified or made already: a layer above uses them again without a second full check, as
    long as the snapshot is still the folder that was checked (same index file and root: a
    snapshot removed and made again meanwhile is checked again)."""
    if checked is not None:
        seen = checked.get(input_digest)
        if seen is not None and seen == _identity(store, input_digest, output):
            return snapshot_dir(store, input_digest) / ROOT
    sweep_tmp(store)
    why = check(store, input_digest, output)
    if why is None:
        root = snapshot_dir(store, input_digest) / ROOT
    else:
        if why != "missing":
            log(f"snapshot {input_digest[:16]} not trusted ({why}): making it again from the store")
            remove(store, input_digest)
        root = make(store, input_digest, output, entries(), lower, mtime=mtime)
    if checked is not None:
        checked[input_digest] = _identity(store, input_digest, output)
    return root


def _identity(store: Store, input_digest: str, output: str) -> tuple | None:
    """Which folder a snapshot is (inode and ctime of its index and its root), for
    :func:`ensure`'s memory of what it checked; None if it is gone."""
    d = snapshot_dir(store, input_digest)
    try:
        i, r = os.lstat(d / INDEX), os.lstat(d / ROOT)
    except OSError:
        return None
    return (output, i.st_ino, i.st_ctime_ns, r.st_ino, r.st_ctime_ns)


def lookup_below(layers: Sequence[Sequence[Entry]], path: str) -> Entry | None:
    """The entry :func:`lxclayer.manifest.merge` gives `path` in the stack `layers` (bottom
    first; None if absent), found without merging: an implicit directory takes the attributes
    of the directory below it, a whiteout or a non-directory parent above hides it."""
    parents = []
    p = parent_of(path)
    while p:
        parents.append(p)
        p = parent_of(p)
    for i in range(len(layers) - 1, -1, -1):
        e = find(layers[i], path)  # type: ignore[arg-type]
        if e is not None:
            if e.type == "whiteout":
                return None
            if e.type == "dir" and e.implicit:
                under = lookup_below(layers[:i], path)
                return under if under is not None and under.type == "dir" else e
            return e
        for parent in parents:
            pe = find(layers[i], parent)  # type: ignore[arg-type]
            if pe is not None and pe.type != "dir":
                return None
    return None


@dataclass
class Policy:
    """Whether this build realises program layers on snapshots; says once when it does not."""

    enabled: bool = True
    reason: str = ""
    say: Callable[[str], None] = lambda m: None
    _said: bool = False
    # The snapshots this build has checked or made (see ensure): each is checked once a build,
    # not once for every layer above it.
    checked: dict[str, tuple] = field(default_factory=dict)

    @classmethod
    def choose(cls, flag: bool | None, say: Callable[[str], None]) -> Policy:
        """`flag` from `--snapshots=on|off`; else $LXCLAYER_SNAPSHOTS (on, off); default on."""
        if flag is None:
            env = os.environ.get(ENV, "").strip().lower()
            if env in ("off", "0", "no", "false"):
                return cls(False, f"{ENV}={env}", say)
            return cls(True, "", say)
        return cls(flag, "" if flag else "--snapshots=off", say)

    def off(self, reason: str) -> None:
        self.enabled, self.reason = False, reason
        self.tell()

    def tell(self) -> None:
        if not self._said and not self.enabled:
            self._said = True
            self.say(f"snapshots off ({self.reason}): program layers are built on a full copy of the layers below")


def sweep_tmp(store: Store) -> None:
    """Remove half-made snapshots of processes that are gone."""
    base = snapshots_dir(store)
    if not base.is_dir():
        return
    for p in base.glob(".tmp-*"):
        try:
            pid = int(p.name.split("-")[1])
        except (IndexError, ValueError):
            pid = 0
        if pid != os.getpid() and not pid_alive(pid):
            rmtree(p)


def remove(store: Store, input_digest: str) -> None:
    """Remove a snapshot (with its store entry, by gc)."""
    rmtree(snapshot_dir(store, input_digest))


def unneeded(store: Store, keep: Iterable[str]) -> list[str]:
    """The snapshots whose input digest is not in `keep` (gc removes them with their entries)."""
    base = snapshots_dir(store)
    if not base.is_dir():
        return []
    keep = set(keep)
    return sorted(p.name for p in base.iterdir() if not p.name.startswith(".") and p.name not in keep)


def disk_usage(store: Store, *, skip: Iterable[str] = ()) -> int:
    """Bytes the snapshots take (allocated blocks; each inode counted once), but those in `skip`."""
    base = snapshots_dir(store)
    total = 0
    seen: set[int] = set()
    skipped = {str(base / s) for s in skip}
    for dirpath, dirs, files in os.walk(base):
        if dirpath == str(base):
            dirs[:] = [x for x in dirs if str(base / x) not in skipped]
        for name in itertools.chain(dirs, files):
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


# --- what a program changed: the overlay's upper directory ---------------------------------------

OPAQUE = "trusted.overlay.opaque"


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def upper_changes(upper: Path, base: dict[str, Entry], store: Store, *, mtime_clamp: int) -> dict[str, Entry]:
    """The tree after a program ran on an overlay (lower: `base`), read from its upper directory
    alone. Mounted without metacopy and redirect_dir, the upper directory holds every changed
    path whole (a changed owner, mode or xattr copies the file up), with the merged view's
    attributes: a char 0:0 device deletes a path, an opaque directory hides all below it."""
    from .scan import scan_dir

    new = dict(base)
    up = scan_dir(upper, store, mtime_clamp=mtime_clamp)
    # Paths of `base` in string order: those under a folder are one run of it. The upper
    # directory's paths are visited parents first, so when a folder's contents are dropped,
    # nothing of the upper directory below it has been added yet: only `base`'s go.
    below = sorted(base)

    def drop_under(path: str) -> None:
        pre = path + "/"
        i = bisect.bisect_left(below, pre)
        while i < len(below) and below[i].startswith(pre):
            new.pop(below[i], None)
            i += 1

    for path in sorted(up, key=sort_key):  # parents first: an opaque dir is emptied before its children
        e = up[path]
        if e.type == "char" and e.major == 0 and e.minor == 0:
            new.pop(path, None)
            drop_under(path)
            continue
        old = new.get(path)
        if (old is not None and old.type == "dir" and e.type != "dir") or (
                e.type == "dir" and _opaque(str(upper / path))):
            drop_under(path)
        new[path] = e
    return new
