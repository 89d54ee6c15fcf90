"""The store interface's own types: what a store holds for a layer, and its GC roots.

They belong to the interface (:mod:`.base`), not to one store: the local store writes them to
disk, the registry cache to a registry. The store knows nothing of the lockfile; an artifact
it records is a :class:`StoredArtifact`, which has the lockfile's `Artifact` fields (the same
JSON), and the lock is made from it by whoever assembles the lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..digest import digest
from ..errors import StoreCorruption
from ..manifest import Entry


class StoredArtifact(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """One resolved thing a layer installed, as its entry records it (a .deb, a wheel, a
    tarball, a tool): the fields of `lxclayer.lock.model.Artifact`, encoded alike."""

    name: str
    version: str = ""
    arch: str = ""
    sha256: str
    source: str = ""  # where it came from: a URL or an archive pool path
    size: int = 0


class LayerMeta(msgspec.Struct, kw_only=True, omit_defaults=True):
    input: str
    output: str
    kind: str
    builder: str
    layer: str = ""  # the name of the layer it was first built for (informational)
    artifacts: dict[str, dict[str, StoredArtifact]] = {}
    record: dict[str, Any] = {}  # the input record that hashes to `input`
    # A cheap check, on every read, that neither the manifest nor any field of this record was
    # altered: "v2:" + xxh3-128 of the manifest file's bytes and the canonical encoding of every
    # other field. (Entries made before v2 carry the xxh3-128 of the manifest and `output` only.)
    seal: str = ""


class LayerEntry:
    """A stored layer: its metadata, and its manifest decoded (and checked against the output
    digest) when first asked for, since a no-op build needs only the digests."""

    __slots__ = ("_entries", "_raw", "_where", "layer", "meta")

    def __init__(self, meta: LayerMeta, entries: list[Entry] | None = None, *, raw: bytes = b"",
                 where: str = "", layer: str | None = None):
        self.meta = meta
        self._entries = entries
        self._raw = raw
        self._where = where
        self.layer = layer

    @property
    def input(self) -> str:
        return self.meta.input

    @property
    def output(self) -> str:
        return self.meta.output

    @property
    def entries(self) -> list[Entry]:
        if self._entries is None:
            try:
                entries = _manifest_dec.decode(self._raw)
            except msgspec.DecodeError as e:
                raise StoreCorruption(f"store entry is unreadable ({e})", entry=self._where,
                                      layer=self.layer) from None
            if digest(entries) != self.meta.output:
                raise StoreCorruption("manifest does not match the recorded output digest",
                                      entry=self._where, layer=self.layer)
            self._entries = entries
            self._raw = b""
        return self._entries


_manifest_dec = msgspec.msgpack.Decoder(list[Entry])



@dataclass(frozen=True)
class Root:
    """A GC root: a lockfile the store keeps everything for (see :mod:`.roots`)."""

    link: Path  # the link in the store
    lock_file: Path  # the lockfile it names

    @property
    def live(self) -> bool:
        return self.lock_file.is_file()
