"""Files lxclayer reads from users and writes for later runs.

Reading: a definition or lockfile that is a FIFO would block a plain `read_bytes()` for ever,
and a device could return endless data; both are refused before a byte is read. Writing: every
file a later run trusts (a lock, a cache, an archive's `.sha256`) is replaced atomically, and
what a killed writer leaves is recognisable by its pid and removed later.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from .digest import CHUNK

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


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = False) -> None:
    """Write `path` so that a reader sees the old file or the whole new one, never a part.

    `durable` also survives a power cut (fsync), at the price of flushing whatever else was
    written to the file system just before: use it for what later runs trust without checking."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets a later run remove what a killed one left (remove_stale_temporaries).
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)



def write_if_changed(path: Path, data: bytes) -> bool:
    """`atomic_write` unless `path` already holds exactly `data` (a no-op build rewrites
    nothing); True when it wrote."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write(path, data)
    return True

def remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporary files of `atomic_write` that a killed process left in `folder`
    (`.NAME.PID.XXXX.tmp` whose PID is gone)."""
    try:
        candidates = list(folder.glob(".*.tmp"))
    except OSError:
        return
    for tmp in candidates:
        parts = tmp.name.split(".")
        # ["", NAME..., PID, RANDOM, "tmp"]
        if len(parts) >= 5 and parts[-3].isdigit() and not pid_alive(int(parts[-3])):
            with contextlib.suppress(OSError):
                tmp.unlink()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rmtree(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return

    def onerror(func, p, exc):  # make read-only folders writable and retry
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
        with contextlib.suppress(OSError):
            func(p)

    shutil.rmtree(path, onerror=onerror)
