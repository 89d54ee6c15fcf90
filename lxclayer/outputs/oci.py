"""The template as an OCI image layout in one plain tar, as Proxmox VE 9.1 reads it.

One image layer per lxclayer layer, bottom first: the layer's own entries (its manifest), with
its whiteouts written as `.wh.<name>` files. Layers are not merged, however small: a layer blob
then depends only on that layer (and SOURCE_DATE_EPOCH), so templates sharing a layer share its
blob, in `dist/` and in a registry, and a changed top layer leaves every blob below it alone.

How a layer tar is shaped, and why (PVE 9.1's unpacker, proxmox-oci, is the reference):
- Tar headers are the tar.gz's (tarformat.header): same names, owners, modes, mtimes, xattrs.
  There is no `./` root member: the unpacker owns the root directory.
- A whiteout deletes a path of the layers below (PVE applies all of a layer's whiteouts before
  unpacking it). An entry that replaces a lower directory with a non-directory also gets a
  whiteout, so that the directory's contents go too, as in lxclayer's merge. Opaque
  directories (`.wh..wh..opq`) are never needed: a layer manifest cannot say "replace this
  directory"; it deletes paths (a whiteout) or sets a directory's metadata (kept contents).
- An implicit directory (made only because something inside it is added) is left out when the
  layers below already have that directory: unpacking it would reset that directory's owner and
  mode, which lxclayer's merge keeps. Which ones were left out is part of the blob's key.
- Each blob is one gzip member (zlib, level 6, no name, mtime 0): PVE decodes layers with
  flate2's GzDecoder, which reads the first member only, so compose's chunked multi-member
  gzip would lose everything after the first chunk. Blobs are cached in the store's artifact
  area by sha256 (and found by a small record keyed by the layer); the layers of a stack are
  compressed in parallel.
- A layer's blob depends on that layer and the directories below it only, so a build makes it
  as soon as the layer is built (`ahead`), in the background while the layers above it build:
  the export at the end finds it in the store, as it would find one of an earlier build.

This module writes images; reading one back (push, `check`, boot-test) is `lxclayer/oci/layout.py`;
the documents both use are `lxclayer/oci/image.py`.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from .. import tarformat
from ..digest import digest
from ..lock.model import Lockfile
from ..lock.toml import stack_digest
from ..manifest import Entry, apply, sorted_entries
from ..oci.image import (
    CONFIG,
    LAYER_GZIP,
    ContainerConfig,
    History,
    ImageConfig,
    RootFS,
    sha256_digest,
)
from ..registry.oci import MANIFEST, Descriptor, Index, Manifest
from ..store import Keep, LayerEntry, Store
from .base import Ahead, ArchiveInfo, Cancelled, Exporter, ExportJob, Job

if TYPE_CHECKING:
    from ..check import Violation

FORMAT = "oci"
GZIP_LEVEL = 6
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
STOP_SIGNAL = "SIGRTMIN+3"  # systemd's halt signal: PVE makes it lxc.signal.halt
WHITEOUT = ".wh."
SHAPE = "oci-layer/1"  # how a layer tar is made from a manifest (bump when it changes)


def compressor_id() -> str:
    return f"zlib {zlib.ZLIB_RUNTIME_VERSION} level {GZIP_LEVEL} {SHAPE}"



class LayerBlob(msgspec.Struct, frozen=True):
    """A compressed layer: its digest and size (the blob) and diff_id (the tar's sha256)."""

    digest: str
    size: int
    diff_id: str


@dataclass
class Image:
    path: Path
    digest: str  # of the image manifest: what a registry pull or `skopeo inspect` shows
    sha256: str  # of the .tar file
    size: int
    layers: list[LayerBlob]
    reused: int = 0
    ahead: int = 0  # blobs made by this build while the layers above them built


_enc = msgspec.json.Encoder(order="sorted")
_blob_dec = msgspec.msgpack.Decoder(LayerBlob)


def _doc(obj: msgspec.Struct) -> bytes:
    return _enc.encode(obj)


# --- layer tars ---------------------------------------------------------------------------------

def whiteout_entry(path: str, mtime: int) -> Entry:
    parent, _, name = path.rpartition("/")
    return Entry(path=f"{parent}/{WHITEOUT}{name}" if parent else WHITEOUT + name, type="file",
                 mode=0o644, mtime=mtime)


def layer_members(layer: list[Entry], below: dict[str, Entry], mtime: int) -> tuple[list[Entry], list[str]]:
    """The entries of `layer`'s image layer tar (archive order), and the implicit directories
    left out because `below` (the merged layers under it, path -> entry) has them."""
    out: list[Entry] = []
    dropped: list[str] = []
    for e in layer:
        old = below.get(e.path)
        if e.type == "whiteout":
            out.append(whiteout_entry(e.path, mtime))
            continue
        if e.implicit and old is not None and old.type == "dir":
            dropped.append(e.path)
            continue
        if old is not None and old.type == "dir" and e.type != "dir":
            out.append(whiteout_entry(e.path, mtime))
        out.append(e)
    return sorted_entries(out), dropped


def tar_stream(members: list[Entry], store: Store) -> Iterator[bytes]:
    """The layer tar's bytes: headers as in the tar.gz, contents from the store, GNU trailer."""
    length = 0
    for e in members:
        hdr = tarformat.header(e)
        yield hdr
        length += len(hdr)
        if e.type == "file" and e.size:
            yield from store.iter_blob(e.hash)
            pad = -e.size % tarformat.BLOCK
            if pad:
                yield b"\0" * pad
            length += e.size + pad
    yield tarformat.trailer(length)


class _Advance:
    """Bytes of layer tars done, of about how many, said to `advance` now and then (the layers
    are compressed in several threads)."""

    def __init__(self, advance, total: int):
        self.advance, self.total = advance, total
        self.done = 0
        self.t0 = self._last = time.monotonic()
        self._lock = threading.Lock()

    def add(self, n: int, *, final: bool = False) -> None:
        with self._lock:
            self.done = min(self.done + n, self.total)
            now = time.monotonic()
            if final or now - self._last >= 0.1:
                self._last = now
                self.advance(self.done, self.total, self.done / max(now - self.t0, 1e-6))


def _raw_size(members: list[Entry]) -> int:
    return sum(e.size for e in members if e.type == "file") + tarformat.BLOCK * (len(members) + 2)


BATCH = 1 << 20


def _batched(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The same bytes in pieces of about BATCH: zlib's output does not depend on how its input
    is cut, and one call per MiB, not per header or small file, hands the GIL back and forth
    rarely (the other exporter's threads wait for it less)."""
    buf = bytearray()
    for data in pieces:
        if not buf and len(data) >= BATCH:
            yield data
            continue
        buf += data
        if len(buf) >= BATCH:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


def write_layer(members: list[Entry], store: Store, out: Path, advance: _Advance | None = None,
                stop: threading.Event | None = None) -> LayerBlob:
    """Write the gzip-compressed layer tar to `out`; one gzip member, deterministic.
    Raises Cancelled once `stop` is set."""
    gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    raw = hashlib.sha256()
    packed = hashlib.sha256()
    size = 0
    with open(out, "wb") as f:
        for data in _batched(tar_stream(members, store)):
            if stop is not None and stop.is_set():
                raise Cancelled
            if advance is not None:
                advance.add(len(data))
            raw.update(data)
            c = gz.compress(data)
            if c:
                f.write(c)
                packed.update(c)
                size += len(c)
        c = gz.flush()
        f.write(c)
        packed.update(c)
        size += len(c)
    return LayerBlob(digest="sha256:" + packed.hexdigest(), size=size, diff_id="sha256:" + raw.hexdigest())


def record_name(key: str) -> str:
    return f"ocilayer-{key}"


def _layer_record(layer: LayerEntry, below: dict[str, Entry], mtime: int) -> tuple[list[Entry], str]:
    """The layer tar's members and the name of the record that finds its blob in the store."""
    members, dropped = layer_members(layer.entries, below, mtime)
    key = digest({"output": layer.output, "mtime": mtime, "compressor": compressor_id(), "dropped": dropped})
    return members, record_name(key)


def _layer_blob(layer: LayerEntry, below: dict[str, Entry], store: Store, mtime: int,
                advance: _Advance | None = None, stop: threading.Event | None = None) -> tuple[LayerBlob, Path, bool]:
    """The layer's blob from the store, or made now and stored; (blob, its path, reused)."""
    members, name = _layer_record(layer, below, mtime)
    key = name.removeprefix("ocilayer-")
    rec = store.get_chunk(name)
    if rec is not None:
        blob = _blob_dec.decode(rec)
        path = store.artifact(blob.digest.removeprefix("sha256:"), name=f"OCI layer {layer.layer or key}")
        if path is not None:
            if advance is not None:
                advance.add(_raw_size(layer.entries))
            return blob, path, True
    return (*_make_blob(layer, members, name, store, advance, stop), False)


def _make_blob(layer: LayerEntry, members: list[Entry], name: str, store: Store, advance: _Advance | None = None,
               stop: threading.Event | None = None) -> tuple[LayerBlob, Path]:
    """Compress the layer tar of `members` into the store, with the record `name` that finds it."""
    with store.staging("oci") as tmp:
        part = tmp / "layer.tar.gz"
        blob = write_layer(members, store, part, advance, stop)
        path = store.put_artifact_file(part, blob.digest.removeprefix("sha256:"),
                                       name=f"OCI layer {layer.layer or name.removeprefix('ocilayer-')}")
    store.put_chunk(name, msgspec.msgpack.encode(blob))
    return blob, path


class BlobsAhead(Ahead):
    """Each layer's blob, made in the background as soon as the layer is built (a blob depends
    on its layer and the directories below it only). Cached and pulled layers are skipped: their
    blobs were most likely made when they were built, or come from the cache with the outputs;
    `export` makes any that is missing."""

    def __init__(self, store: Store, mtime: int):
        self.store, self.mtime = store, mtime
        self._tree: dict[str, Entry] = {}  # the layers below the next one, merged
        self._unapplied: list[LayerEntry] = []  # (merged only when a fresh layer needs them)
        self._lock = threading.Lock()
        self.made: set[str] = set()  # digests of the blobs made ahead

    def layer(self, entry: LayerEntry, fresh: bool) -> Job | None:
        self._unapplied.append(entry)
        if not fresh:
            return None
        for e in self._unapplied[:-1]:
            apply(self._tree, e.entries)
        self._unapplied = [entry]
        below = {p: e for p, e in self._tree.items() if e.type == "dir"}

        def job(stop: threading.Event) -> None:
            members, name = _layer_record(entry, below, self.mtime)
            if self.store.get_chunk(name) is not None:
                return  # made before (export checks it)
            blob, _ = _make_blob(entry, members, name, self.store, stop=stop)
            with self._lock:
                self.made.add(blob.digest)

        return job


def layer_keys(layers: list[LayerEntry], mtime: int) -> Iterator[tuple[LayerEntry, dict[str, Entry]]]:
    """Each layer with the merged tree below it (a copy per layer: they are used in parallel)."""
    tree: dict[str, Entry] = {}
    for layer in layers:
        yield layer, {p: e for p, e in tree.items() if e.type == "dir"}
        apply(tree, layer.entries)


# --- the image ------------------------------------------------------------------------------

def iso(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_documents(*, name: str, version: str, release: int, arch: str, mtime: int,
                    lock_digest: str, layer_names: list[str], blobs: list[LayerBlob]) -> tuple[bytes, bytes, bytes]:
    """(config, manifest, index.json) bytes of the image."""
    created = iso(mtime)
    labels = {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": f"{version}-{release}",
        "org.opencontainers.image.created": created,
        "dev.lxclayer.template": f"{name}_{version}-{release}_{arch}",
        "dev.lxclayer.lock": lock_digest,
    }
    config = _doc(ImageConfig(
        created=created, architecture=arch, os="linux",
        config=ContainerConfig(Labels=labels, StopSignal=STOP_SIGNAL),
        rootfs=RootFS(diff_ids=[b.diff_id for b in blobs]),
        history=[History(created=created, created_by=f"lxclayer layer {n}") for n in layer_names],
    ))
    manifest = _doc(Manifest(
        config=Descriptor(media_type=CONFIG, digest=sha256_digest(config), size=len(config)),
        layers=[Descriptor(media_type=LAYER_GZIP, digest=b.digest, size=b.size) for b in blobs],
        annotations={"org.opencontainers.image.created": created},
    ))
    index = _doc(Index(manifests=[Descriptor(
        media_type=MANIFEST, digest=sha256_digest(manifest), size=len(manifest),
        annotations={"org.opencontainers.image.ref.name": f"{version}-{release}"})]))
    return config, manifest, index


def _copy(src: Path) -> Iterable[bytes]:
    with open(src, "rb") as r:
        while data := r.read(1 << 20):
            yield data


def write_image(layers: list[LayerEntry], store: Store, out: Path, *, name: str, version: str,
                release: int, arch: str, mtime: int, lock_digest: str, jobs: int | None = None,
                layer_names: list[str] | None = None, advance=None, ahead: set[str] | None = None) -> Image:
    """Write the OCI image layout tar `out` atomically, from the stack's store entries.
    `advance(bytes done, of about, bytes per second)` counts the layer tars made or reused.
    `ahead`: digests of blobs this build made while the layers above them built (counted apart
    from those reused)."""
    jobs = jobs or os.cpu_count() or 1
    counter = _Advance(advance, sum(_raw_size(la.entries) for la in layers)) if advance else None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_layer_blob, layer, below, store, mtime, counter)
                   for layer, below in layer_keys(layers, mtime)]
        made = [f.result() for f in futures]
    if counter is not None:
        counter.add(counter.total, final=True)
    blobs = [b for b, _, _ in made]
    config, manifest, index = image_documents(
        name=name, version=version, release=release, arch=arch, mtime=mtime, lock_digest=lock_digest,
        layer_names=layer_names or [layer.layer or layer.output for layer in layers], blobs=blobs)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.{os.getpid()}.", suffix=".part")
    sha = hashlib.sha256()
    length = 0
    try:
        with os.fdopen(fd, "wb") as f:
            def put(data: bytes) -> None:
                nonlocal length
                f.write(data)
                sha.update(data)
                length += len(data)

            def member(member_name: str, data: bytes) -> None:
                put(tarformat.plain_header(member_name, len(data), mtime))
                put(data + b"\0" * (-len(data) % tarformat.BLOCK))

            member("oci-layout", LAYOUT)
            member("index.json", index)
            put(tarformat.plain_header("blobs/", 0, mtime, directory=True))
            put(tarformat.plain_header("blobs/sha256/", 0, mtime, directory=True))
            member(f"blobs/sha256/{sha256_digest(config)[7:]}", config)
            member(f"blobs/sha256/{sha256_digest(manifest)[7:]}", manifest)
            seen: set[str] = set()
            for blob, path, _ in made:
                if blob.digest in seen:
                    continue  # two layers with the same blob (empty layers): stored once
                seen.add(blob.digest)
                put(tarformat.plain_header(f"blobs/sha256/{blob.digest[7:]}", blob.size, mtime))
                for data in _copy(path):
                    put(data)
                put(b"\0" * (-blob.size % tarformat.BLOCK))
            put(tarformat.trailer(length))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    ahead = ahead or set()
    return Image(path=out, digest=sha256_digest(manifest), sha256=sha.hexdigest(), size=length, layers=blobs,
                 reused=sum(1 for b, _, r in made if r and b.digest not in ahead),
                 ahead=sum(1 for b, _, r in made if r and b.digest in ahead))


# --- the exporter -----------------------------------------------------------------------------

class OciImage(Exporter):
    """`oci`: `dist/<name>_<version>-<release>_<arch>.tar`, an OCI image layout in a plain tar."""

    format = FORMAT

    def filename(self, template) -> str:
        return f"{template.basename}.tar"

    def compressor(self) -> str:
        return compressor_id()

    def _key(self, lock_digest: str) -> str:
        # the stack's lock pins the template's identity, SOURCE_DATE_EPOCH and every layer
        return digest({"fmt": FORMAT, "compressor": compressor_id(), "lock": lock_digest})

    def export(self, job: ExportJob) -> ArchiveInfo:
        t = job.template
        path = job.out_dir / self.filename(t)
        assert job.lock is not None, "an image is labelled with its stack's lock"
        lock_digest = stack_digest(job.lock)
        key = self._key(lock_digest)
        t0 = time.monotonic()
        known = job.store.composed(key)
        image_rec = job.store.get_chunk(f"ociimage-{key}")
        if known is not None and image_rec is not None and job.store.output_matches(key, path, known):
            return ArchiveInfo(format=FORMAT, path=path, sha256=known["sha256"], size=known["size"],
                               composed=False, image=image_rec.decode())
        if job.started:
            job.started(path)
        image = write_image(job.layers, job.store, path, name=t.name, version=t.version, release=t.release,
                            arch=t.arch, mtime=t.source_date_epoch, lock_digest=lock_digest, jobs=job.jobs,
                            layer_names=list(job.lock.layers), advance=job.advance,
                            ahead=job.ahead.made if isinstance(job.ahead, BlobsAhead) else None)
        job.store.record_composed(key, path, image.sha256, image.size)
        job.store.put_chunk(f"ociimage-{key}", image.digest.encode())
        return ArchiveInfo(format=FORMAT, path=path, sha256=image.sha256, size=image.size, image=image.digest,
                           chunks=len(image.layers), reused=image.reused, ahead=image.ahead,
                           seconds=time.monotonic() - t0)

    def keep(self, store: Store, lock: Lockfile, layers: list[LayerEntry], keep: Keep) -> None:
        """The layer blobs, the records that find them, and the image's records (a no-op build
        needs them)."""
        source_date_epoch = lock.template.source_date_epoch
        key = self._key(stack_digest(lock))
        keep.composed.add(key)
        keep.chunks.add(f"ociimage-{key}")
        for layer, below in layer_keys(layers, source_date_epoch):
            _, name = _layer_record(layer, below, source_date_epoch)
            rec = store.get_chunk(name)
            if rec is None:
                continue
            keep.chunks.add(name)
            with contextlib.suppress(msgspec.DecodeError):
                keep.artifacts.add(_blob_dec.decode(rec).digest.removeprefix("sha256:"))

    def ahead(self, store: Store, mtime: int) -> BlobsAhead:
        return BlobsAhead(store, mtime)

    def check(self, path: Path) -> list[Violation]:
        """The layout's rules and every layer blob (`oci.layout.check_layout`)."""
        from ..oci.layout import check_layout  # the reader: not needed to write an image

        return check_layout(path)


EXPORTERS = {FORMAT: OciImage()}
