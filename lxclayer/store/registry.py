"""A remote cache of store entries in an OCI registry (a substituter, in Nix's words).

Layout in the repository (docs/cache.md), every document a plain OCI 1.1 image manifest:

- tag ``layer-<input digest>``: one layer entry. ``config`` is the entry's metadata (input
  record, output digest, builder, pins); ``layers[0]`` its manifest (msgpack, as the local store
  keeps it); ``layers[1:]`` *packs*: the file contents the manifest names, as deterministic tars
  (members named by their xxh3-128) compressed with zstd, cut at about 64 MiB, so a root file
  system of 20 000 files is a handful of requests, not 20 000.
- tag ``out-<key>``: what an output format keeps in the store for one stack (compressed archive
  chunks, OCI layer blobs and their records), each layer annotated with its store name, so a
  machine with an empty store composes without compressing.

Everything is content addressed: blobs are sent only when the registry lacks them (HEAD
first), the manifest last, so a tag never names a missing blob, and two machines pushing the
same entry both succeed with one copy kept. Pulled bytes are checked twice: the client checks
each blob's sha256 while it streams, and every file is put into the store through its own
xxh3 check before anything refers to it. `query` brings the entry's metadata and manifest
only, `fetch` its packs: whether an entry may be *used* (its builder, its output digest against
the lock) is the caller's decision (:mod:`lxclayer.cache`), made between the two, so that a
refused entry costs no pack.

Nothing pulled is larger than what its manifest accounts for: the metadata and the entry's
manifest are read up to their descriptors' sizes; the packs together may not claim more than
the files the entry names can take as tars compressed with zstd (`pack_bound`), each pack is
read up to its descriptor's size, each of its files must have the size the entry gives it and
is streamed to disk, and no pack decompresses to more than the entry's files can fill.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import zstandard

from ..manifest import Entry
from ..registry import BlobUnknown, DigestMismatch, NotFound, RegistryClient, oci
from .base import Store
from .model import LayerEntry, LayerMeta
from .substituter import Offer, Pulled, Substituter

LAYER_TYPE = "application/vnd.lxclayer.layer.v1"
META_TYPE = "application/vnd.lxclayer.layer.meta.v1+json"
MANIFEST_TYPE = "application/vnd.lxclayer.layer.manifest.v1+msgpack"
PACK_TYPE = "application/vnd.lxclayer.blobs.v1.tar+zstd"
OUTPUTS_TYPE = "application/vnd.lxclayer.outputs.v1"
CHUNK_TYPE = "application/vnd.lxclayer.chunk.v1"
ARTIFACT_TYPE = "application/vnd.lxclayer.artifact.v1"
NAME = "dev.lxclayer.name"  # annotation: the store name of an output blob
OUTPUT = "dev.lxclayer.output"  # annotation: a layer entry's output digest
LAYER = "dev.lxclayer.layer"  # annotation: the layer's name (informational)
PACK_SIZE = 64 << 20
ZSTD_LEVEL = 3
MAX_ENTRY_MANIFEST = 256 << 20
MAX_META = 4 << 20
MAX_CHUNK_BLOB = 64 << 20  # compose's chunks hold at most ~8 MiB; they are read into memory
IN_MEMORY = 4 << 20  # a pack member up to this size is read into memory, a larger one streamed to disk
_BLOCK = tarfile.BLOCKSIZE

_meta_dec = msgspec.json.Decoder(LayerMeta)
_manifest_dec = msgspec.msgpack.Decoder(list[Entry])
_manifest_enc = msgspec.msgpack.Encoder()


def layer_tag(input_digest: str) -> str:
    return f"layer-{input_digest}"


def outputs_tag(key: str) -> str:
    return f"out-{key}"


class RegistryCache(Substituter):
    """Layer entries and output caches in one registry repository: a :class:`Substituter`."""

    def __init__(self, client: RegistryClient):
        self.client = client
        self.where = f"oci://{client.ref.registry}/{client.ref.repository}"  # never credentials

    def close(self) -> None:
        self.client.close()

    # --- what is there ----------------------------------------------------------------------

    def held(self) -> set[str]:
        return {t.removeprefix("layer-") for t in self.client.tags() if t.startswith("layer-")}

    def _manifest(self, tag: str) -> oci.Manifest | None:
        """The image manifest under `tag` (verified by the client), None when absent."""
        try:
            _, _, data = self.client.get_manifest(tag, accept=(oci.MANIFEST,))
        except NotFound:
            return None
        try:
            return msgspec.json.decode(data, type=oci.Manifest)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise DigestMismatch(f"{self.where}: {tag} is not an image manifest") from None

    def claimed_output(self, input_digest: str) -> str | None:
        """The output digest the cache's entry for `input_digest` says it has (not checked)."""
        m = self._manifest(layer_tag(input_digest))
        return None if m is None else (m.annotations or {}).get(OUTPUT, "")

    # --- layer entries ----------------------------------------------------------------------

    def query(self, input_digest: str) -> Offer | None:
        """The entry for `input_digest`: its OCI manifest, metadata and entry manifest, none of
        its packs. None when the cache has none."""
        m = self._manifest(layer_tag(input_digest))
        if m is None:
            return None
        if (m.artifact_type != LAYER_TYPE or m.config.media_type != META_TYPE or not m.layers
                or m.layers[0].media_type != MANIFEST_TYPE
                or any(d.media_type != PACK_TYPE for d in m.layers[1:])):
            raise DigestMismatch(f"{self.where}: {layer_tag(input_digest)} is not an lxclayer layer entry")
        if m.config.size > MAX_META:
            raise DigestMismatch(f"{self.where}: {layer_tag(input_digest)}: metadata too large")
        try:
            meta = _meta_dec.decode(self.client.fetch_blob(m.config.digest, limit=m.config.size))
        except msgspec.DecodeError:
            raise DigestMismatch(f"{self.where}: {layer_tag(input_digest)}: metadata does not decode") from None
        if meta.input != input_digest:
            raise DigestMismatch(f"{self.where}: {layer_tag(input_digest)} holds the entry of {meta.input}")
        if m.layers[0].size > MAX_ENTRY_MANIFEST:
            raise DigestMismatch(f"{self.where}: {layer_tag(input_digest)}: manifest too large")
        try:
            entries = _manifest_dec.decode(self.client.fetch_blob(m.layers[0].digest, limit=m.layers[0].size))
        except msgspec.DecodeError:
            raise DigestMismatch(f"{self.where}: {layer_tag(input_digest)}: manifest does not decode") from None
        claimed = (m.annotations or {}).get(OUTPUT, meta.output)
        return Offer(meta=meta, entries=entries, claimed_output=claimed, source=m.layers[1:])

    def fetch(self, offer: Offer, store: Store) -> Pulled:
        """The offer's packs, those holding files `store` lacks, unpacked into its blob area.
        Raises RegistryError (unavailable, refused bytes) and StoreCorruption (a pack whose
        contents do not match their names)."""
        tag = layer_tag(offer.meta.input)
        wanted = {e.hash: e.size for e in offer.entries if e.type == "file" and e.hash}
        missing = {h for h in wanted if not store.has_blob(h)}
        blobs = 0
        size = 0
        if missing:
            packs: list[oci.Descriptor] = offer.source
            tar_max = tar_bound(wanted.values(), len(packs))
            claimed, bound = sum(d.size for d in packs), pack_bound(tar_max, len(packs))
            if claimed > bound or any(d.size < 0 for d in packs):
                raise DigestMismatch(f"{self.where}: {tag}: its packs claim {claimed} "
                                     f"bytes, the files its manifest names take at most {bound}")
            with store.staging("pull") as tmp:
                paths = self.client.pull_blobs(
                    (d.digest, tmp / d.digest.removeprefix("sha256:"), d.size) for d in packs)
                size = claimed
                with ThreadPoolExecutor(2) as pool:
                    for n in pool.map(lambda p: _unpack(p, store, wanted, tar_max), paths):
                        blobs += n
            still = [h for h in missing if not store.has_blob(h)]
            if still:
                raise DigestMismatch(f"{self.where}: {tag} lacks {len(still)} file(s) "
                                     "its manifest names")
        return Pulled(meta=offer.meta, entries=offer.entries, claimed_output=offer.claimed_output,
                      blobs=blobs, bytes=size)

    def push(self, entry: LayerEntry, store: Store) -> bool:
        """Upload one entry (only what the registry lacks). False when it was there already."""
        tag = layer_tag(entry.input)
        if self.client.manifest_digest(tag) is not None:
            return False
        meta = msgspec.json.encode(msgspec.structs.replace(entry.meta, seal=""))
        raw = _manifest_enc.encode(entry.entries)
        packs = list(_packs(entry.entries, store))
        with ThreadPoolExecutor(2) as pool:
            compressed = list(pool.map(lambda p: _pack_bytes(p, store), packs))
        manifest = msgspec.json.encode(oci.Manifest(
            artifact_type=LAYER_TYPE,
            config=_desc(META_TYPE, meta),
            layers=[_desc(MANIFEST_TYPE, raw), *(_desc(PACK_TYPE, c) for c in compressed)],
            annotations={OUTPUT: entry.output, LAYER: entry.meta.layer},
        ))
        self._publish(tag, manifest, [meta, raw, *compressed])
        return True

    def _publish(self, tag: str, manifest: bytes, blobs: list[bytes | Path]) -> None:
        """Blobs (those missing), then the manifest. Another machine pushing the same blobs at
        the same moment can make the registry refuse the manifest for a blob it does not see
        yet (its HEAD said present, its link was not written): push again, a few times."""
        for attempt in range(4):
            self.client.push_blobs(blobs)
            try:
                self.client.put_manifest(tag, manifest, oci.MANIFEST)
                return
            except BlobUnknown:
                if attempt == 3:
                    raise
                time.sleep(0.25 * 2 ** attempt)

    # --- output caches (compose chunks, OCI layer blobs) ------------------------------------

    def fetch_outputs(self, key: str, store: Store) -> list[str]:
        """Put what the cache holds under `out-<key>` into the store; the names put."""
        m = self._manifest(outputs_tag(key))
        if m is None:
            return []
        if m.artifact_type != OUTPUTS_TYPE:
            raise DigestMismatch(f"{self.where}: {outputs_tag(key)} is not an lxclayer output cache")
        names: list[str] = []
        with store.staging("pull") as tmp:
            wanted = [d for d in m.layers if not _have(store, d)]
            if any(d.media_type == CHUNK_TYPE and d.size > MAX_CHUNK_BLOB for d in wanted):
                raise DigestMismatch(f"{self.where}: {outputs_tag(key)} names a chunk larger than "
                                     f"{MAX_CHUNK_BLOB >> 20} MiB; refused")
            paths = self.client.pull_blobs((d.digest, tmp / d.digest.removeprefix("sha256:"), d.size)
                                           for d in wanted)
            for d, path in zip(wanted, paths, strict=True):
                name = (d.annotations or {}).get(NAME, "")
                if d.media_type == CHUNK_TYPE and name:
                    store.put_chunk(name, path.read_bytes())
                elif d.media_type == ARTIFACT_TYPE:
                    store.put_artifact_file(path, d.digest.removeprefix("sha256:"), name=f"cached output {name}")
                else:
                    continue
                names.append(name)
        return names

    def push_outputs(self, key: str, names: Callable[[], tuple[Iterable[str], Iterable[str]]], store: Store) -> int:
        """Upload the chunks and artifacts `names()` gives as `out-<key>`, unless the cache has
        it; the number of blobs it lists (0 when it was there, or the store lacks some)."""
        tag = outputs_tag(key)
        if self.client.manifest_digest(tag) is not None:
            return 0
        chunks, artifacts = names()
        descs: list[oci.Descriptor] = []
        sources: list[bytes | Path] = []
        for name in sorted(chunks):
            payload = store.get_chunk(name)
            if payload is None:
                return 0  # incomplete: nothing to gain from a partial record
            sources.append(payload)
            descs.append(_desc(CHUNK_TYPE, payload, {NAME: name}))
        for sha in sorted(artifacts):
            path = store.artifact(sha, name=f"output blob {sha[:12]}")
            if path is None:
                return 0
            sources.append(path)
            descs.append(oci.Descriptor(media_type=ARTIFACT_TYPE, digest="sha256:" + sha,
                                        size=path.stat().st_size, annotations={NAME: sha}))
        manifest = msgspec.json.encode(oci.Manifest(
            artifact_type=OUTPUTS_TYPE, config=oci.Descriptor(media_type=oci.EMPTY, digest=oci.EMPTY_DIGEST, size=2),
            layers=descs))
        self._publish(tag, manifest, [b"{}", *sources])
        return len(descs)


def _have(store: Store, d: oci.Descriptor) -> bool:
    name = (d.annotations or {}).get(NAME, "")
    if d.media_type == CHUNK_TYPE:
        return store.get_chunk(name) is not None
    if d.media_type == ARTIFACT_TYPE:
        return store.artifact(d.digest.removeprefix("sha256:"), name=name) is not None
    return True


def _desc(media_type: str, data: bytes, annotations: dict[str, str] | None = None) -> oci.Descriptor:
    return oci.Descriptor(media_type=media_type, digest="sha256:" + hashlib.sha256(data).hexdigest(),
                          size=len(data), annotations=annotations)


def _packs(entries: list[Entry], store: Store) -> Iterator[list[tuple[str, int]]]:
    """The entry's distinct file contents in manifest order, cut into packs of ~PACK_SIZE."""
    seen: set[str] = set()
    pack: list[tuple[str, int]] = []
    size = 0
    for e in entries:
        if e.type != "file" or not e.hash or e.hash in seen:
            continue
        seen.add(e.hash)
        pack.append((e.hash, e.size))
        size += e.size
        if size >= PACK_SIZE:
            yield pack
            pack, size = [], 0
    if pack:
        yield pack


def _pack_bytes(pack: list[tuple[str, int]], store: Store) -> bytes:
    """A deterministic tar of the pack's contents (names = xxh3, fixed headers), zstd."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for h, _size in pack:
            data = store.read_blob(h)
            info = tarfile.TarInfo(h)
            info.size, info.mode, info.mtime = len(data), 0o444, 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(buf.getvalue())


def tar_bound(sizes: Iterable[int], packs: int) -> int:
    """The most bytes tars holding files of `sizes` can take (as `_pack_bytes` makes them: one
    header block each, the contents padded to blocks, the end blocks padded to a record)."""
    total = sum(_BLOCK + -(-max(0, s) // _BLOCK) * _BLOCK for s in sizes)
    return total + packs * (tarfile.RECORDSIZE + 2 * _BLOCK)


def pack_bound(tar_bytes: int, packs: int) -> int:
    """The most bytes zstd can make of `tar_bytes` in `packs` frames (ZSTD_compressBound, with
    room for each frame's header and checksum)."""
    return tar_bytes + (tar_bytes >> 7) + packs * 1024


class _Bounded:
    """A reader that refuses to give more than `limit` bytes (a pack decompressing to more than
    the entry's files can fill is a bomb, whatever its members say)."""

    def __init__(self, inner, limit: int):
        self._inner, self.left = inner, limit

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 20
        data = self._inner.read(min(n, self.left + 1))
        self.left -= len(data)
        if self.left < 0:
            raise DigestMismatch("a pack from the cache decompresses to more than the files its "
                                 "entry names; refused")
        return data


def _unpack(path: Path, store: Store, wanted: dict[str, int], tar_max: int) -> int:
    """Put a pack's files into the store, each through the store's own hash check. Each member's
    size is checked against the entry before it is read; a large one is streamed to disk."""
    n = 0
    try:
        with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z, \
                tarfile.open(fileobj=_Bounded(z, tar_max), mode="r|") as tf:
            for m in tf:
                if not m.isfile() or m.name not in wanted:
                    continue
                if m.size != wanted[m.name]:
                    raise DigestMismatch(f"a cached file named {m.name} has {m.size} bytes, its entry "
                                         f"says {wanted[m.name]}; refused")
                fo = tf.extractfile(m)
                assert fo is not None
                if m.size <= IN_MEMORY:
                    h = store.put_blob(fo.read(m.size))
                else:
                    h = _put_streamed(fo, m.size, path.with_name(f".{path.name}.member"), store)
                if h != m.name:
                    raise DigestMismatch(f"a cached file named {m.name} holds {h}; refused")
                n += 1
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as e:
        raise DigestMismatch(f"a pack from the cache does not read ({e}); refused") from None
    return n


def _put_streamed(fo, size: int, tmp: Path, store: Store) -> str:
    """A large member: to a file next to the pack in blocks, then into the store."""
    try:
        with open(tmp, "wb") as out:
            left = size
            while left > 0:
                block = fo.read(min(1 << 20, left))
                if not block:
                    raise EOFError("a pack member ends early")
                out.write(block)
                left -= len(block)
        h, _ = store.put_blob_file(tmp)
        return h
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
