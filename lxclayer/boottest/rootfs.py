"""Safe file access inside an unpacked root file system, as the container will see it.

The tree comes from an archive we are testing, so any symlink in it may point anywhere. Every
path is resolved the way it would be resolved inside the container (absolute links and `..`
stay within the root, as under chroot), so writing `/etc/resolv.conf` can never touch a file of
the host. Files written are owned by the container's mapped root, as Proxmox does.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

MAPPED_ROOT = 100000
MAX_SYMLINKS = 40


class RootFS:
    def __init__(self, root: Path, *, uid: int = MAPPED_ROOT, gid: int = MAPPED_ROOT):
        self.root = Path(root)
        self.uid = uid
        self.gid = gid

    # -- resolving -----------------------------------------------------------------------
    def resolve(self, path: str, *, follow_final: bool = True) -> Path:
        """The host path of container path `path`, following symlinks as the container would.

        Components that do not exist are kept as they are (the result may not exist)."""
        pending = [c for c in PurePosixPath("/", path).parts[1:]]
        done: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            host = self.root.joinpath(*done, part)
            is_last = not pending
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                done.append(part)
                continue
            if stat.S_ISLNK(st.st_mode) and (follow_final or not is_last):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                target = os.readlink(host)
                parts = [c for c in target.split("/")]
                if target.startswith("/"):
                    done = []
                pending = parts + pending
                continue
            done.append(part)
        return self.root.joinpath(*done)

    # -- reading ---------------------------------------------------------------------------
    def is_file(self, path: str) -> bool:
        """Like Perl's `-f` in PVE: a regular file, following links."""
        try:
            return stat.S_ISREG(os.lstat(self.resolve(path)).st_mode)
        except OSError:
            return False

    def is_dir(self, path: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self.resolve(path)).st_mode)
        except OSError:
            return False

    def is_symlink(self, path: str) -> bool:
        try:
            return stat.S_ISLNK(os.lstat(self.resolve(path, follow_final=False)).st_mode)
        except OSError:
            return False

    def is_executable(self, path: str) -> bool:
        try:
            st = os.lstat(self.resolve(path))
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)

    def read_text(self, path: str) -> str | None:
        if not self.is_file(path):
            return None
        with open(self.resolve(path), "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(self.resolve(path, follow_final=False))
        except OSError:
            return None

    # -- writing ---------------------------------------------------------------------------
    def is_ignored(self, path: str) -> bool:
        """PVE leaves a file alone when `.pve-ignore.NAME` sits beside it."""
        p = PurePosixPath("/", path)
        return self.is_file(str(p.parent / f".pve-ignore.{p.name}"))

    def makedirs(self, path: str, mode: int = 0o755) -> Path:
        """Create the directory `path` (and parents) owned by the mapped root; returns its host
        path. Links on the way are followed inside the tree, missing folders created there."""
        target = self.resolve(path)
        current = self.root
        for part in target.relative_to(self.root).parts:
            current = current / part
            if not os.path.lexists(current):
                os.mkdir(current, mode)
                os.chown(current, self.uid, self.gid, follow_symlinks=False)
            elif not stat.S_ISDIR(os.lstat(current).st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory in the container", path)
        return target

    def write_text(self, path: str, data: str, mode: int = 0o644, *, preserve: bool = False) -> bool:
        """Replace `path` with `data` (write a temporary file, rename it over the name, as PVE's
        file_set_contents does: a symlink in the final place is replaced, not followed).

        The new file belongs to the mapped root with `mode`; with `preserve`, an existing
        regular file keeps its owner and mode (PVE does so for /etc/shadow and /etc/passwd).
        Returns False when the file is PVE-ignored and was left alone."""
        if self.is_ignored(path):
            return False
        p = PurePosixPath("/", path)
        parent = self.makedirs(str(p.parent))
        final = parent / p.name
        uid, gid = self.uid, self.gid
        if preserve:
            try:
                st = os.lstat(final)
                if stat.S_ISREG(st.st_mode):
                    uid, gid, mode = st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
            except FileNotFoundError:
                pass
        tmp = parent / f".{p.name}.lxclayer-tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.write(fd, data.encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)
        if os.path.isdir(final) and not os.path.islink(final):
            os.unlink(tmp)
            raise IsADirectoryError(errno.EISDIR, "is a directory in the container", path)
        os.rename(tmp, final)
        return True

    def unlink(self, path: str) -> bool:
        """Remove `path` itself (not what a link points to). False when absent or ignored."""
        if self.is_ignored(path):
            return False
        host = self.resolve(path, follow_final=False)
        try:
            if stat.S_ISDIR(os.lstat(host).st_mode):
                return False
            os.unlink(host)
        except FileNotFoundError:
            return False
        return True
