"""Write a merged stack of layers into a real directory (for builders that run programs in a
chroot). Needs root for owners and device nodes.

Every path is resolved beneath `dest` one component at a time (:mod:`lxclayer.beneath`): no
symlink, ``..`` or absolute path in a manifest can make it write anywhere else, even one that
got past the entry gate."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .beneath import Escape, Walker, parts
from .errors import BuildError
from .manifest import Entry
from .store import Store

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
_DEVICE = {"char": stat.S_IFCHR, "block": stat.S_IFBLK}
WHITEOUT_DEVICE = os.makedev(0, 0)


class UnsafePath(BuildError):
    """A manifest path that would be written outside the destination."""


def materialise(tree: list[Entry], dest: Path, store: Store, *, whiteouts: bool = False) -> None:
    """Create every entry of `tree` (archive order: parents first) under `dest`. Whiteouts are
    skipped, or made as char 0:0 devices (overlayfs's whiteouts) when `whiteouts`. A path that
    would leave `dest` is an UnsafePath error naming it."""
    dest.mkdir(parents=True, exist_ok=True)
    dirs: list[Entry] = []
    with Walker(dest) as w:
        for e in tree:
            try:
                _write(w, e, store, dirs, whiteouts)
            except Escape as x:
                raise UnsafePath(f"refusing to write {e.path!r} outside {dest}: {x}") from None
        # Children first: their creation changed the directories' mtimes.
        for e in reversed(dirs):
            try:
                parent, name = w.parent(e.path)
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            except Escape as x:
                raise UnsafePath(f"refusing to write {e.path!r} outside {dest}: {x}") from None
            try:
                _meta_fd(fd, e)
            finally:
                os.close(fd)


def _write(w: Walker, e: Entry, store: Store, dirs: list[Entry], whiteouts: bool) -> None:
    t = e.type
    if t == "whiteout" and not whiteouts:
        parts(e.path)  # checked all the same
        return
    parent, name = w.parent(e.path)
    if t == "dir":
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise Escape(f"{e.path!r} exists and is not a directory") from None
        dirs.append(e)
    elif t == "file":
        fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            for block in store.iter_blob(e.hash):
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
            _meta_fd(fd, e)
        finally:
            os.close(fd)
    elif t == "symlink":
        os.symlink(e.target, name, dir_fd=parent)
        os.chown(name, e.uid, e.gid, dir_fd=parent, follow_symlinks=False)
        for x, value in e.xattrs.items():
            os.setxattr(w.proc_path(parent, name), x, value, follow_symlinks=False)
        os.utime(name, (e.mtime, e.mtime), dir_fd=parent, follow_symlinks=False)
    elif t in _DEVICE or t == "fifo" or t == "whiteout":
        if t == "fifo":
            os.mkfifo(name, 0o600, dir_fd=parent)
        elif t == "whiteout":
            os.mknod(name, stat.S_IFCHR | 0o000, WHITEOUT_DEVICE, dir_fd=parent)
            return
        else:
            os.mknod(name, _DEVICE[t] | 0o600, os.makedev(e.major, e.minor), dir_fd=parent)
        # Devices and fifos cannot be opened to be changed: by name in the open parent.
        os.chown(name, e.uid, e.gid, dir_fd=parent, follow_symlinks=False)
        os.chmod(name, e.mode, dir_fd=parent, follow_symlinks=False)
        for x, value in e.xattrs.items():
            os.setxattr(w.proc_path(parent, name), x, value, follow_symlinks=False)
        os.utime(name, (e.mtime, e.mtime), dir_fd=parent, follow_symlinks=False)


def _meta_fd(fd: int, e: Entry) -> None:
    os.fchown(fd, e.uid, e.gid)
    os.fchmod(fd, e.mode)
    for name, value in e.xattrs.items():
        os.setxattr(fd, name, value)
    os.utime(fd, (e.mtime, e.mtime))
