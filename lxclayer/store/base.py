"""The store interface: what evaluation, realisation, outputs and gc may ask of a store.

Everything else is the store's own business: its layout, its temporary files, how it seals and
checks what it holds, how it evicts damage and what gc removes. The local store
(:mod:`lxclayer.store.local`) is one implementation. A remote cache is not a store but a
substituter (:mod:`lxclayer.store.substituter`): it fills a local store from elsewhere.

`Store(root)` opens the local store at `root` (the default when none is named), as Nix's
`openStore()` does: code that only needs *a* store never names the implementation.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..errors import StoreCorruption
    from ..manifest import Entry
    from .model import LayerEntry, LayerMeta, Root


@dataclass
class Keep:
    """What gc keeps: names of layer entries (input digests), blobs, artifacts, chunks and
    composed-archive records."""

    layers: set[str] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)
    artifacts: set[str] = field(default_factory=set)
    chunks: set[str] = field(default_factory=set)
    composed: set[str] = field(default_factory=set)


@dataclass
class Swept:
    """What a sweep freed (or, in a dry run, would free)."""

    layers: int = 0
    blobs: int = 0
    chunks: int = 0
    artifacts: int = 0
    freed: int = 0
    kept: int = 0
    # (input digest, layer name it was built for, kind, size) of each layer entry freed
    freed_entries: list[tuple[str, str, str, int]] = field(default_factory=list)


class Store(abc.ABC):
    """A content-addressed store of layer entries, blobs, artifacts and archive chunks."""

    root: Path  # where its files on this machine live: only the store joins paths under it
    default: type[Store] | None = None  # what Store(...) opens: set by the local store's module

    def __new__(cls, *args: Any, **kwargs: Any) -> Store:
        if cls is Store:  # Store(root): open the default (local) store
            assert Store.default is not None, "import lxclayer.store, not lxclayer.store.base"
            return Store.default(*args, **kwargs)
        return super().__new__(cls)

    # --- sessions and locks ---------------------------------------------------------------------

    @abc.abstractmethod
    def session(self, exclusive: bool = False) -> contextlib.AbstractContextManager[Store]:
        """Hold the store for a build (shared) or for gc (exclusive)."""

    @abc.abstractmethod
    def project_lock(self, lock_file: Path) -> contextlib.AbstractContextManager[None]:
        """Serialise builds of one lockfile."""

    @abc.abstractmethod
    def layer_lock(self, input_digest: str) -> contextlib.AbstractContextManager[None]:
        """Held while building one layer, so two builds build it once."""

    @abc.abstractmethod
    def staging(self, prefix: str = "stage") -> contextlib.AbstractContextManager[Path]:
        """A fresh work folder, removed afterwards (and by a later run if this one is killed)."""

    # --- areas it keeps for the rest of lxclayer ----------------------------------------------
    # Each under the store's root, reached only through these (what is inside is the caller's).

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the store has been made (a command that only reads, like plan, makes none)."""

    @abc.abstractmethod
    def layer_dir(self, input_digest: str) -> Path:
        """Where the entry stored under `input_digest` is (or would be): what a damage report
        names as its `entry`, so that :meth:`evict` finds it."""

    @abc.abstractmethod
    def tmp_dir(self) -> Path:
        """Scratch space on the store's file system (staging folders are made in it)."""

    @abc.abstractmethod
    def snapshots_dir(self) -> Path:
        """Where the snapshots of entries live (:mod:`lxclayer.snapshots` keeps them)."""

    @abc.abstractmethod
    def statcache_path(self, key: str) -> Path:
        """The file of the stat cache `key`: the sources' (one per project: :mod:`lxclayer.sources`),
        a lock's parse (:mod:`lxclayer.lock.parsed`), the host tools' versions (mmdebstrap)."""

    @abc.abstractmethod
    def logs_dir(self) -> Path:
        """Where build logs go (:mod:`lxclayer.progress` names and prunes them)."""

    # --- GC roots: the lockfiles whose layers gc keeps (:mod:`lxclayer.store.roots`) ---------

    @abc.abstractmethod
    def register_root(self, lock_file: Path) -> Path:
        """Make `lock_file` a root of the store (idempotent)."""

    @abc.abstractmethod
    def roots(self) -> list[Root]:
        """Every registered root, live or dead, sorted by lockfile path."""

    @abc.abstractmethod
    def remove_root(self, root: Root) -> None: ...

    # --- layer entries --------------------------------------------------------------------------

    @abc.abstractmethod
    def lookup(self, input_digest: str, *, layer: str | None = None) -> LayerEntry | None:
        """The entry stored under `input_digest`, checked; None if absent; StoreCorruption if damaged."""

    @abc.abstractmethod
    def publish(self, meta: LayerMeta, entries: list[Entry]) -> LayerEntry:
        """Store a built layer (its blobs already put) under its input digest, atomically."""

    @abc.abstractmethod
    def remove_entry(self, input_digest: str) -> None:
        """Take one layer entry out of the store (it is built, or pulled, again when next wanted)."""

    @abc.abstractmethod
    def evict(self, damage: StoreCorruption, stack: list[LayerEntry]) -> list[str]:
        """Remove what a damage report names, so that it is built again: the damaged entry, or
        the damaged blob and every entry of `stack` that names it. Returns the input digests of
        the entries removed."""

    @abc.abstractmethod
    def entries(self) -> Iterator[str]:
        """The input digests of every entry held."""

    # --- blobs and artifacts --------------------------------------------------------------------

    @abc.abstractmethod
    def has_blob(self, h: str) -> bool: ...

    def blob_size(self, h: str) -> int | None:
        """The size of a stored blob (None if absent or unknown): what the entry gate checks
        a manifest's file sizes against."""
        return None

    @abc.abstractmethod
    def put_blob(self, data: bytes) -> str: ...

    @abc.abstractmethod
    def put_blob_file(self, src: Path | str) -> tuple[str, int]: ...

    @abc.abstractmethod
    def read_blob(self, h: str, *, layer: str | None = None) -> bytes:
        """A blob's bytes, checked against its name."""

    @abc.abstractmethod
    def iter_blob(self, h: str, *, layer: str | None = None) -> Iterator[bytes]: ...

    @abc.abstractmethod
    def read_blob_into(self, h: str, size: int, buf: memoryview, start: int = 0, *,
                       layer: str | None = None) -> None: ...

    @abc.abstractmethod
    def artifact(self, sha256: str, *, name: str) -> Path | None:
        """A downloaded artifact (.deb, wheel, tarball), checked; None if absent."""

    @abc.abstractmethod
    def put_artifact_file(self, src: Path, sha256: str, *, name: str) -> Path: ...

    # --- what outputs keep ----------------------------------------------------------------------

    @abc.abstractmethod
    def get_chunk(self, name: str) -> bytes | None:
        """A compressed archive chunk, checked; None if absent or damaged."""

    @abc.abstractmethod
    def put_chunk(self, name: str, payload: bytes) -> None: ...

    @abc.abstractmethod
    def remove_chunk(self, name: str) -> None:
        """Forget a chunk (one that came from elsewhere and proved wrong)."""

    @abc.abstractmethod
    def composed(self, key: str) -> dict[str, Any] | None:
        """The record of an archive composed for `key` (sha256, size, where it was written)."""

    @abc.abstractmethod
    def record_composed(self, key: str, path: Path, sha256: str, size: int) -> None: ...

    @abc.abstractmethod
    def output_matches(self, key: str, path: Path, known: dict[str, Any]) -> bool:
        """Whether `path` still holds the archive recorded under `key`."""

    # --- garbage collection ---------------------------------------------------------------------

    @abc.abstractmethod
    def sweep(self, keep: Keep, *, dry_run: bool = False) -> Swept:
        """Remove what `keep` does not name, and what killed runs left half-made (under an
        exclusive session)."""
