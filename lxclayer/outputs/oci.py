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
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgspec

from .. import tarformat
from ..digest import digest
from ..manifest import Entry, apply, sorted_entries
from ..registry.oci import MANIFEST, Descriptor, Index, Manifest
from ..store import LayerEntry, Store

FORMAT = "oci"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
GZIP_LEVEL = 6
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
STOP_SIGNAL = "SIGRTMIN+3"  # systemd's halt signal: PVE makes it lxc.signal.halt
WHITEOUT = ".wh."
SHAPE = "oci-layer/1"  # how a layer tar is made from a manifest (bump when it changes)


def compressor_id() -> str:
    return f"zlib {zlib.ZLIB_RUNTIME_VERSION} level {GZIP_LEVEL} {SHAPE}"


# --- OCI documents (image spec 1.1) -------------------------------------------------------------

class RootFS(msgspec.Struct):
    diff_ids: list[str]
    type: str = "layers"


class ContainerConfig(msgspec.Struct, omit_defaults=True):
    Labels: dict[str, str] = {}
    StopSignal: str = ""


class History(msgspec.Struct, omit_defaults=True):
    created: str
    created_by: str
    empty_layer: bool = False


class ImageConfig(msgspec.Struct, omit_defaults=True):
    created: str
    architecture: str
    os: str
    config: ContainerConfig
    rootfs: RootFS
    history: list[History] = []


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


_enc = msgspec.json.Encoder(order="sorted")
_blob_dec = msgspec.msgpack.Decoder(LayerBlob)


def _doc(obj: msgspec.Struct) -> bytes:
    return _enc.encode(obj)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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


def write_layer(members: list[Entry], store: Store, out: Path) -> LayerBlob:
    """Write the gzip-compressed layer tar to `out`; one gzip member, deterministic."""
    gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    raw = hashlib.sha256()
    packed = hashlib.sha256()
    size = 0
    with open(out, "wb") as f:
        for data in tar_stream(members, store):
            raw.update(data)
            for c in (gz.compress(data),):
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


def _layer_blob(layer: LayerEntry, below: dict[str, Entry], store: Store, mtime: int) -> tuple[LayerBlob, Path, bool]:
    """The layer's blob from the store, or made now and stored; (blob, its path, reused)."""
    members, dropped = layer_members(layer.entries, below, mtime)
    key = digest({"output": layer.output, "mtime": mtime, "compressor": compressor_id(), "dropped": dropped})
    name = record_name(key)
    rec = store.get_chunk(name)
    if rec is not None:
        blob = _blob_dec.decode(rec)
        path = store.artifact(blob.digest.removeprefix("sha256:"), name=f"OCI layer {layer.layer or key}")
        if path is not None:
            return blob, path, True
    with store.staging("oci") as tmp:
        part = tmp / "layer.tar.gz"
        blob = write_layer(members, store, part)
        path = store.put_artifact_file(part, blob.digest.removeprefix("sha256:"),
                                       name=f"OCI layer {layer.layer or key}")
    store.put_chunk(name, msgspec.msgpack.encode(blob))
    return blob, path, False


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
        config=Descriptor(media_type=CONFIG, digest=_sha(config), size=len(config)),
        layers=[Descriptor(media_type=LAYER_GZIP, digest=b.digest, size=b.size) for b in blobs],
        annotations={"org.opencontainers.image.created": created},
    ))
    index = _doc(Index(manifests=[Descriptor(
        media_type=MANIFEST, digest=_sha(manifest), size=len(manifest),
        annotations={"org.opencontainers.image.ref.name": f"{version}-{release}"})]))
    return config, manifest, index


def _copy(src: Path) -> Iterable[bytes]:
    with open(src, "rb") as r:
        while data := r.read(1 << 20):
            yield data


def write_image(layers: list[LayerEntry], store: Store, out: Path, *, name: str, version: str,
                release: int, arch: str, mtime: int, lock_digest: str, jobs: int | None = None) -> Image:
    """Write the OCI image layout tar `out` atomically, from the stack's store entries."""
    jobs = jobs or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_layer_blob, layer, below, store, mtime) for layer, below in layer_keys(layers, mtime)]
        made = [f.result() for f in futures]
    blobs = [b for b, _, _ in made]
    config, manifest, index = image_documents(
        name=name, version=version, release=release, arch=arch, mtime=mtime, lock_digest=lock_digest,
        layer_names=[layer.layer or layer.output for layer in layers], blobs=blobs)
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
            member(f"blobs/sha256/{_sha(config)[7:]}", config)
            member(f"blobs/sha256/{_sha(manifest)[7:]}", manifest)
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
    return Image(path=out, digest=_sha(manifest), sha256=sha.hexdigest(), size=length, layers=blobs,
                 reused=sum(1 for _, _, r in made if r))
