"""The lockfile, parsed once per content: what a build reads (issue 24, the no-op build).

Parsing and checking the template's lock (a thousand TOML keys) took about 0.1 s of a 0.5 s
no-op build, and a no-op build reads the same bytes as the build before it. So the parsed
`Lockfile` is kept, as msgpack, in the store's stat cache area (`Store.statcache_path`), one
file per lock path, under the xxh3-128 of the lock's bytes and of the code that reads them
(`lock/model.py`, `lock/toml.py`): a lock that differs in one byte, or a changed parser, is
parsed again. The cache is only a shortcut: a missing, damaged or stale one is parsed over,
and a store that cannot be written to changes nothing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import xxhash

from ..fsio import atomic_write, read_regular
from . import model
from . import toml as locktoml
from .model import Lockfile

if TYPE_CHECKING:
    from ..store import Store


class Parsed(msgspec.Struct):
    key: str  # of the lock's bytes and the parser's code
    lock: Lockfile


def _code() -> bytes:
    return b"".join(Path(m.__file__).read_bytes() for m in (model, locktoml) if m.__file__)


def cache_file(store: Store, path: Path) -> Path:
    """Where the parse of the lock at `path` is kept."""
    return store.statcache_path("lock-" + xxhash.xxh3_64_hexdigest(str(path.resolve()).encode()))


def read(path: Path, store: Store) -> Lockfile | None:
    """The lockfile at `path` (None if there is none), as :func:`lxclayer.lock.toml.read` gives
    it: from the store's copy of its parse when the bytes and the parser are the same."""
    path = Path(path)
    try:
        raw = read_regular(path)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return locktoml.read(path)  # None, or the error in its words
    try:
        key = xxhash.xxh3_128_hexdigest(raw + b"\0" + _code())
    except OSError:  # the parser's source cannot be read (installed without it): no shortcut
        return locktoml.loads(text, file=str(path))
    where = cache_file(store, path)
    with contextlib.suppress(OSError, msgspec.DecodeError, msgspec.ValidationError):
        kept = msgspec.msgpack.decode(read_regular(where), type=Parsed)
        if kept.key == key:
            return kept.lock
    lock = locktoml.loads(text, file=str(path))
    with contextlib.suppress(OSError):
        where.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(where, msgspec.msgpack.encode(Parsed(key=key, lock=lock)))
    return lock
