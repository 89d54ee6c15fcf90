"""Write a merged stack of layers into a real directory (for builders that run programs in a
chroot). Needs root for owners and device nodes."""

from __future__ import annotations

import os
from pathlib import Path

from .manifest import Entry
from .store import Store


def materialise(tree: list[Entry], dest: Path, store: Store) -> None:
    """Create every entry of `tree` (archive order: parents first) under `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    dirs: list[tuple[str, Entry]] = []
    for e in tree:
        p = os.path.join(dest, e.path)
        if e.type == "dir":
            os.makedirs(p, exist_ok=True)
            dirs.append((p, e))
            continue
        if e.type == "file":
            with open(p, "wb") as f:
                for block in store.iter_blob(e.hash):
                    f.write(block)
        elif e.type == "symlink":
            os.symlink(e.target, p)
        elif e.type in ("char", "block"):
            kind = 0o020000 if e.type == "char" else 0o060000
            os.mknod(p, kind | e.mode, os.makedev(e.major, e.minor))
        elif e.type == "fifo":
            os.mkfifo(p, e.mode)
        else:
            continue
        _meta(p, e)
    for p, e in reversed(dirs):  # children first, so a read-only parent does not stop them
        _meta(p, e)


def _meta(p: str, e: Entry) -> None:
    os.lchown(p, e.uid, e.gid)
    if e.type != "symlink":
        os.chmod(p, e.mode)
    for name, value in e.xattrs.items():
        os.setxattr(p, name, value, follow_symlinks=False)
    os.utime(p, (e.mtime, e.mtime), follow_symlinks=False)
