"""Writing inside a directory tree without ever leaving it, whatever the paths say.

Defence in depth below the entry gate (:mod:`lxclayer.entrycheck`): the code that writes trees
(materialise, snapshots, the boot test's whiteouts) resolves every path one component at a time
from an open directory descriptor, each with ``O_NOFOLLOW | O_DIRECTORY``, and then acts on the
last component through that descriptor (``dir_fd=``, ``follow_symlinks=False``). A symlink, an
absolute path, a ``..``, ``.`` or empty component therefore raises instead of leading out of the
root: what Linux's ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` would do, which Python's
``os`` does not offer.

Paths come in archive order in practice (parents right before their contents), so :class:`Walker`
keeps the chain of directories it last opened and reopens nothing a sibling already needed.
"""

from __future__ import annotations

import errno
import os

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Escape(OSError):
    """A path that would leave the root, or pass through a symlink or a non-directory."""


def parts(path: str) -> list[str]:
    """The components of a relative path; Escape for an absolute one or one with ``..``, ``.``
    or empty components (or a NUL)."""
    comps = path.split("/")
    for c in comps:
        if c in ("", ".", "..") or "\0" in c:
            raise Escape(f"{path!r} is not a plain relative path")
    return comps


def open_dir(name: str, dir_fd: int, *, create: bool = False) -> int:
    """Open the directory `name` inside `dir_fd` without following a symlink (made 0755 if
    missing and `create`); Escape when it is a symlink or not a directory."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        except FileExistsError:
            pass
        return open_dir(name, dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Escape(f"{name!r} is a symlink or not a directory") from None
        raise


class Walker:
    """Directory descriptors beneath one root, for paths relative to it. A context manager."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True):
        self._create = create
        self._stack: list[tuple[str, int]] = [("", os.open(root, DIR_FLAGS))]

    def __enter__(self) -> Walker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        while self._stack:
            os.close(self._stack.pop()[1])

    @property
    def root_fd(self) -> int:
        return self._stack[0][1]

    def parent(self, path: str) -> tuple[int, str]:
        """(descriptor of the directory holding `path`, its last component). Missing directories
        on the way are made (0755) when the walker creates; a symlink or non-directory on the
        way, or an unsafe path, raises Escape."""
        comps = parts(path)
        name = comps.pop()
        stack = self._stack
        # Keep the longest open chain that is a prefix of the parent's components.
        depth = 0
        while depth + 1 < len(stack) and depth < len(comps) and stack[depth + 1][0] == comps[depth]:
            depth += 1
        while len(stack) > depth + 1:
            os.close(stack.pop()[1])
        for comp in comps[depth:]:
            stack.append((comp, open_dir(comp, stack[-1][1], create=self._create)))
        return stack[-1][1], name

    def proc_path(self, dir_fd: int, name: str) -> str:
        """A path naming `name` in the open directory `dir_fd`, for calls without `dir_fd=`
        (xattrs): the /proc magic link is the directory itself and cannot be redirected."""
        return f"/proc/self/fd/{dir_fd}/{name}"
