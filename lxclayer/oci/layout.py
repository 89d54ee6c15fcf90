"""Reading an OCI image layout tar as Proxmox VE 9.1 reads it (push, `check`, boot-test).

`read_layout` (the layout's rules, the manifest and config, where each layer
blob lies in the tar) and `check_layout` (every layer blob streamed against its digest, media
type, compression and diff_id, and its members by the template rules). It reads any image, not
only lxclayer's: it imports nothing of the store or the exporters.
"""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import zstandard

from ..check import Member, Violation, ZstdReader, check_layers, compression_of, member_of
from ..errors import ArchiveError
from ..registry.oci import MANIFEST, Descriptor, Index, Manifest
from .image import CONFIG, ImageConfig, sha256_digest

# --- reading an image layout tar (check, boot-test, push) -------------------------------------

@dataclass
class Layout:
    """An image layout tar as PVE 9.1 reads it: the manifest its index names first, the config,
    and where each blob's bytes are in the tar (offset, size)."""

    path: Path
    manifest_digest: str
    manifest: Manifest
    config: ImageConfig
    blobs: dict[str, tuple[int, int]]
    manifest_bytes: bytes = b""  # the documents as stored (a push sends them unchanged)
    config_bytes: bytes = b""

    def blob(self, f, digest: str) -> BlobSlice:
        """A reader of layer blob `digest` inside the open layout file `f`."""
        offset, size = self.blobs[digest]
        return BlobSlice(f, offset, size)


class BlobSlice:
    """A file-like view of `size` bytes of `f` from `offset` (a blob inside the layout tar)."""

    def __init__(self, f, offset: int, size: int):
        self.f, self.left = f, size
        f.seek(offset)

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.f.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(data)
        return data

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        while data := self.read(size):
            yield data


_manifest_dec = msgspec.json.Decoder(Manifest)
_index_dec = msgspec.json.Decoder(Index)
_config_dec = msgspec.json.Decoder(ImageConfig)
MAX_DOCUMENT = 4 << 20


def read_layout(path: Path) -> Layout:
    """Open an OCI image layout tar and check what PVE 9.1 relies on: member names exactly
    `oci-layout`, `index.json` and `blobs/...`; the first index entry an image manifest; the
    config's media type; every document's digest. Layer blobs are located, not read.
    Raises ArchiveError naming the file and the rule."""
    def bad(why: str) -> ArchiveError:
        return ArchiveError(f"not an OCI image as Proxmox VE 9.1 reads it: {why}", file=str(path))

    try:
        tf = tarfile.open(path, "r:")
    except (OSError, tarfile.TarError) as e:
        raise bad(f"not a plain tar ({e})") from None
    with tf:
        members = {m.name: m for m in tf}
        for need in ("oci-layout", "index.json"):
            if need not in members:
                raise bad(f"no member named exactly {need!r} (PVE compares names exactly)")

        def doc(name: str) -> bytes:
            m = members.get(name)
            if m is None or not m.isfile() or m.size > MAX_DOCUMENT:
                raise bad(f"{name} is missing or not a small regular file")
            f = tf.extractfile(m)
            assert f is not None
            return f.read()

        def blob(d: Descriptor) -> bytes:
            data = doc(f"blobs/sha256/{d.digest.removeprefix('sha256:')}")
            if sha256_digest(data) != d.digest or len(data) != d.size:
                raise bad(f"blob {d.digest} does not match its digest or size")
            return data

        try:
            index = _index_dec.decode(doc("index.json"))
            if not index.manifests or index.manifests[0].media_type != MANIFEST:
                raise bad(f"the first index.json entry is not an image manifest ({MANIFEST})")
            mdesc = index.manifests[0]
            manifest_bytes = blob(mdesc)
            manifest = _manifest_dec.decode(manifest_bytes)
            if manifest.config.media_type != CONFIG:
                raise bad(f"the config's media type is {manifest.config.media_type!r}, not {CONFIG}")
            config_bytes = blob(manifest.config)
            config = _config_dec.decode(config_bytes)
        except msgspec.DecodeError as e:
            raise bad(f"a document does not decode: {e}") from None
        if len(config.rootfs.diff_ids) != len(manifest.layers):
            raise bad("rootfs.diff_ids and the manifest's layers differ in number")
        blobs = {}
        for d in manifest.layers:
            m = members.get(f"blobs/sha256/{d.digest.removeprefix('sha256:')}")
            if m is None or not m.isfile() or m.size != d.size:
                raise bad(f"layer blob {d.digest} is missing or has the wrong size")
            blobs[d.digest] = (m.offset_data, m.size)
    return Layout(path=path, manifest_digest=mdesc.digest, manifest=manifest, config=config, blobs=blobs,
                  manifest_bytes=manifest_bytes, config_bytes=config_bytes)



def check_layout(path: Path) -> list[Violation]:
    """The layout's rules (read_layout); every layer blob against its digest, its media type
    (one PVE applies) and its compression (the media type's); its uncompressed bytes against
    its diff_id; and the layers' members, merged as PVE applies them, by the rules the
    tar.gz is checked by (check.check_layers). Decompression streams: constant memory."""
    try:
        layout = read_layout(path)
    except ArchiveError as e:
        return [Violation(path=path.name, rule="oci-layout", message=e.message())]
    out: list[Violation] = []
    with open(path, "rb") as f:
        def layers() -> Iterator[Iterator[Member]]:
            for n, (d, diff_id) in enumerate(zip(layout.manifest.layers, layout.config.rootfs.diff_ids,
                                                 strict=True), 1):
                comp = PVE_LAYERS.get(d.media_type)
                if comp is None:
                    out.append(Violation(f"blobs/sha256/{d.digest[7:]}", "oci-media-type",
                                         f"layer {n} has media type {d.media_type!r}: Proxmox VE 9.1 "
                                         "applies only tar layers (plain, +gzip, +zstd), and pct create "
                                         "fails on this one"))
                    _check_digest(layout.blob(f, d.digest), d.digest, out)
                    continue
                yield _layer_members(layout.blob(f, d.digest), d.digest, comp, diff_id, n, out)

        tree = check_layers(layers())
    return out + tree


# The layer media types PVE 9.1 applies (proxmox-oci), and the compression each must have.
PVE_LAYERS = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
}


class _Hashing:
    """A reader that hashes (sha256) what passes through it."""

    def __init__(self, inner):
        self._inner, self.sha = inner, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        self.sha.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


class _GzipFirst:
    """The first gzip member only, as flate2's GzDecoder (PVE) reads a layer; decompressed a
    bounded piece at a time. `extra` says whether anything but zeros followed that member."""

    def __init__(self, raw):
        self._raw, self._d, self._buf, self.extra = raw, zlib.decompressobj(31), b"", False

    def read(self, n: int = -1) -> bytes:
        n = 1 << 20 if n is None or n < 0 else n
        while len(self._buf) < n and not self._d.eof:
            data = self._d.unconsumed_tail or self._raw.read(1 << 16)
            if not data:
                raise EOFError("gzip data ends inside its member (truncated)")
            self._buf += self._d.decompress(data, n - len(self._buf))
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def rest(self) -> None:
        """Read what follows the first member (the blob's hash needs every byte)."""
        tail = self._d.unused_data
        while True:
            if tail.strip(b"\0"):
                self.extra = True
            tail = self._raw.read(1 << 16)
            if not tail:
                return


def _check_digest(blob: BlobSlice, digest_: str, out: list[Violation]) -> None:
    h = _Hashing(blob)
    h.drain()
    if h.digest() != digest_:
        out.append(Violation(f"blobs/sha256/{digest_[7:]}", "oci-blob", "the layer blob does not match its digest"))


def _layer_members(blob: BlobSlice, digest_: str, comp: str, diff_id: str, n: int,
                   out: list[Violation]) -> Iterator[Member]:
    """The members of one layer blob, streamed; the blob's digest, compression and diff_id are
    checked on the way (violations into `out`)."""
    where = f"blobs/sha256/{digest_[7:]}"
    raw = _Hashing(blob)
    head = raw.read(8)
    found = compression_of(head)
    rest = _Prefixed(head, raw)
    if found != comp:
        out.append(Violation(where, "oci-compression", f"layer {n} is typed {comp}-compressed but its "
                             f"bytes are {found}-compressed: PVE fails to read it"))
        raw.drain()
        if raw.digest() != digest_:
            out.append(Violation(where, "oci-blob", "the layer blob does not match its digest"))
        return
    plain = _GzipFirst(rest) if comp == "gzip" else ZstdReader(rest) if comp == "zstd" else rest
    tar = _Hashing(plain)
    try:
        with tarfile.open(fileobj=tar, mode="r|") as tf:  # type: ignore[call-overload]
            while (ti := tf.next()) is not None:
                yield member_of(ti)
                tf.members.clear()
        tar.drain()
        if isinstance(plain, _GzipFirst):
            plain.rest()
            if plain.extra:
                out.append(Violation(where, "oci-compression", f"layer {n} has more than one gzip member: "
                                     "PVE reads the first only"))
        raw.drain()
    except (tarfile.TarError, EOFError, OSError, zlib.error, zstandard.ZstdError, UnicodeError) as e:
        out.append(Violation(where, "oci-layer", f"layer {n} does not read as a tar: {e or type(e).__name__}"))
        return
    if raw.digest() != digest_:
        out.append(Violation(where, "oci-blob", "the layer blob does not match its digest"))
    if tar.digest() != diff_id:
        out.append(Violation(where, "oci-diff-id", f"layer {n}'s uncompressed tar has sha256 {tar.digest()}, "
                             f"rootfs.diff_ids says {diff_id}: PVE finds layers by it and fails"))


class _Prefixed:
    """`head` (already read), then the rest of `inner`."""

    def __init__(self, head: bytes, inner):
        self._head, self._inner = head, inner

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                data, self._head = self._head, b""
                return data + self._inner.read(-1)
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._inner.read(n)
