"""Reading the files a user hands lxclayer (definitions, lockfiles) without trusting their type.

A definition or lockfile that is a FIFO would block a plain `read_bytes()` for ever, and a
device could return endless data; both are refused before a byte is read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def read_regular(path: Path | str) -> bytes:
    """The bytes of the regular file at `path` (symlinks followed).

    Raises FileNotFoundError if there is none, and OSError (with a `strerror` that says what
    it is instead) for anything that is not a regular file; never blocks on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise OSError(errno.EINVAL, f"not a regular file (it is {what})", str(path))
        chunks = []
        while block := os.read(fd, 1 << 20):
            chunks.append(block)
        return b"".join(chunks)
    finally:
        os.close(fd)
