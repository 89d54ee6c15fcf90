"""Read a real directory tree into manifest entries, storing file contents as blobs.

Used by the builders that run programs in a chroot: the tree after the program ran is scanned
and compared with the tree before (see :func:`lxclayer.manifest.diff`). Modes, numeric owners,
the xattrs Proxmox restores (`user.*`, `security.capability`) and mtimes clamped to
SOURCE_DATE_EPOCH are kept; sockets are skipped (tar cannot hold them); hard links become
regular files sharing one blob.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import BuildError
from .manifest import Entry
from .store import Store

KEPT_XATTRS = ("security.capability",)
KEPT_XATTR_PREFIXES = ("user.",)


def kept_xattr(name: str) -> bool:
    return name in KEPT_XATTRS or name.startswith(KEPT_XATTR_PREFIXES)


# A file system without xattrs, or a file without the attribute: nothing to keep. Any other
# error (EIO, EACCES, ENOMEM...) would silently drop a file capability, so it is raised.
BENIGN_XATTR_ERRNOS = (errno.ENOTSUP, errno.ENODATA)


def read_xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in BENIGN_XATTR_ERRNOS:
            return {}
        raise BuildError(f"cannot list the extended attributes of {path}: {e.strerror}") from None
    out = {}
    for n in sorted(names):
        if kept_xattr(n):
            try:
                out[n] = os.getxattr(path, n, follow_symlinks=False)
            except OSError as e:
                if e.errno in BENIGN_XATTR_ERRNOS:
                    continue  # removed between listing and reading
                raise BuildError(f"cannot read {n} of {path}: {e.strerror}") from None
    return out


def scan_dir(root: Path, store: Store, *, mtime_clamp: int, skip: tuple[str, ...] = ()) -> dict[str, Entry]:
    """Every path below `root` (not `root` itself) as an entry; `skip` lists paths not to
    descend into or record (mount points such as proc, sys, dev)."""
    out: dict[str, Entry] = {}
    skipped = set(skip)
    # hash of (dev, ino) -> (hash, size), so hard links are read once
    seen: dict[tuple[int, int], tuple[str, int]] = {}
    root_s = str(root)

    def walk(dirpath: str, rel: str) -> None:
        with os.scandir(dirpath) as it:
            children = sorted(it, key=lambda d: d.name)
        for d in children:
            path = f"{rel}/{d.name}" if rel else d.name
            if path in skipped:
                continue
            st = d.stat(follow_symlinks=False)
            mode = stat.S_IMODE(st.st_mode)
            mt = min(int(st.st_mtime), mtime_clamp)
            common = dict(path=path, mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=mt)
            fmt = stat.S_IFMT(st.st_mode)
            if fmt == stat.S_IFDIR:
                out[path] = Entry(type="dir", xattrs=read_xattrs(d.path), **common)
                walk(d.path, path)
            elif fmt == stat.S_IFREG:
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen:
                    h, size = seen[key]
                else:
                    h, size = store.put_blob_file(d.path)
                    seen[key] = (h, size)
                out[path] = Entry(type="file", size=size, hash=h, xattrs=read_xattrs(d.path), **common)
            elif fmt == stat.S_IFLNK:
                common["mode"] = 0o777
                out[path] = Entry(type="symlink", target=os.readlink(d.path), **common)
            elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
                out[path] = Entry(
                    type="char" if fmt == stat.S_IFCHR else "block",
                    major=os.major(st.st_rdev), minor=os.minor(st.st_rdev), **common,
                )
            elif fmt == stat.S_IFIFO:
                out[path] = Entry(type="fifo", **common)
            # sockets: skipped

    walk(root_s, "")
    return out
