"""Compose: write the merged stack as one deterministic, compressed template archive.

The tar stream is cut into chunks at entry boundaries chosen by content (a boundary falls after
an entry whose key hash says so, once the chunk holds enough bytes); a file larger than PIECE
has chunks of its own, cut at fixed offsets of its content, so that no chunk is large (one
100 MB library would otherwise keep one core busy while the other waits, and hold the whole
chunk in memory). Every chunk is compressed on its own: a gzip member or a zstd frame.
Concatenated, they are one valid stream that GNU tar, Python's tarfile and `pct create` read as
usual. A chunk's key is the digest of what it holds (each entry's header and content hash) and
of the compressor, so after an edit only the chunks around the edited entries are compressed
again; the rest is copied from the store. The bytes do not depend on the number of cores or on what was cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import xxhash
import zstandard

from . import prealloc, tarformat
from .errors import BuildError
from .manifest import Entry
from .store import Store

CHUNKING = "chunked/3"  # the archive bytes; the cache file format is _ChunkCache's
MIN_CHUNK = 2 << 20  # no boundary before a chunk holds this many bytes
MAX_CHUNK = 8 << 20  # always a boundary after this many bytes
PIECE = 8 << 20  # a larger file has chunks of its own, one per PIECE bytes of its content
BOUNDARY_MASK = 0x7  # after MIN_CHUNK, one entry in 8 (by key hash) ends a chunk
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
FORMATS = ("tar.gz", "tar.zst")


def compressor_id(fmt: str) -> str:
    if fmt == "tar.gz":
        return f"zlib {zlib.ZLIB_RUNTIME_VERSION} level {GZIP_LEVEL} {CHUNKING}"
    if fmt == "tar.zst":
        return f"zstd {zstandard.ZSTD_VERSION[0]}.{zstandard.ZSTD_VERSION[1]}.{zstandard.ZSTD_VERSION[2]} level {ZSTD_LEVEL} {CHUNKING}"
    raise ValueError(fmt)


def compress(fmt: str, data: bytes | bytearray) -> bytes:
    """One self-contained gzip member (no name, mtime 0) or zstd frame."""
    if fmt == "tar.gz":
        c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(data)


@dataclass
class Chunk:
    """A run of the tar stream: whole entries, or one piece of a large file's content.

    `piece` is None for whole entries; for a piece it is the (start, stop) of the content of its
    only entry, with the header before the first piece and the padding after the last."""

    key: str
    raw_size: int
    entries: list[Entry] = field(default_factory=list)
    prefix: bytes = b""  # the root directory's header, in the first chunk
    piece: tuple[int, int] | None = None


_entry_encoder = msgspec.msgpack.Encoder()


def _pieces(e: Entry, encoded: bytes, cid: bytes) -> Iterator[Chunk]:
    """A large file's chunks: its content cut every PIECE bytes from its start, so that the
    cuts depend on the file alone (what comes before it moves none of them)."""
    for start in range(0, e.size, PIECE):
        stop = min(start + PIECE, e.size)
        raw = stop - start
        if start == 0:
            raw += tarformat.header_size(e)
        if stop == e.size:
            raw += -e.size % tarformat.BLOCK
        key = xxhash.xxh3_128(cid + encoded + b"piece %d %d" % (start, stop)).hexdigest()
        yield Chunk(key=key, raw_size=raw, entries=[e], piece=(start, stop))


def plan_chunks(entries: list[Entry], fmt: str, mtime: int) -> Iterator[Chunk]:
    """Group entries into chunks; the boundaries depend only on the entries themselves.

    A chunk's key hashes the compressor and each entry's msgpack encoding (which determines its
    tar header and, through the content hash, its data), so keys are cheap: no tar header is
    built for a chunk that is found in the cache. No chunk holds more than MAX_CHUNK + PIECE
    bytes (and a header), so compressing one takes bounded memory whatever the files."""
    cid = compressor_id(fmt).encode()
    root = tarformat.root_header(mtime)
    h = xxhash.xxh3_128(cid)
    h.update(root)
    chunk = Chunk(key="", raw_size=len(root), prefix=root)
    encode = _entry_encoder.encode
    for e in entries:
        b = encode(e)
        if e.type == "file" and e.size > PIECE:
            if chunk.entries or chunk.prefix:
                chunk.key = h.hexdigest()
                yield chunk
            yield from _pieces(e, b, cid)
            h = xxhash.xxh3_128(cid)
            chunk = Chunk(key="", raw_size=0)
            continue
        h.update(b)
        chunk.entries.append(e)
        chunk.raw_size += tarformat.header_size(e)
        if e.type == "file":
            chunk.raw_size += e.size + (-e.size % tarformat.BLOCK)
        cut = chunk.raw_size >= MAX_CHUNK or (
            chunk.raw_size >= MIN_CHUNK and (xxhash.xxh32_intdigest(b) & BOUNDARY_MASK) == 0
        )
        if cut:
            chunk.key = h.hexdigest()
            yield chunk
            h = xxhash.xxh3_128(cid)
            chunk = Chunk(key="", raw_size=0)
    if chunk.entries or chunk.prefix:
        chunk.key = h.hexdigest()
        yield chunk


@dataclass
class ComposeResult:
    path: Path
    sha256: str
    size: int
    chunks: int = 0
    reused: int = 0
    raw_size: int = 0


def chunk_bytes(chunk: Chunk, store: Store) -> bytearray:
    """The chunk's tar bytes, read into one buffer of exactly its size: headers are copied in,
    file contents are read straight into place (and checked against their hash)."""
    buf = bytearray(chunk.raw_size)
    view = memoryview(buf)
    pos = len(chunk.prefix)
    view[:pos] = chunk.prefix
    # (entry, start, stop) of its content: a piece, or each whole entry
    segments = [(chunk.entries[0], *chunk.piece)] if chunk.piece else [(e, 0, e.size) for e in chunk.entries]
    for e, start, stop in segments:
        if start == 0:
            hdr = tarformat.header(e)
            view[pos:pos + len(hdr)] = hdr
            pos += len(hdr)
        if e.type == "file":
            store.read_blob_into(e.hash, e.size, view[pos:pos + stop - start], start)
            pos += stop - start
            if stop == e.size:
                pos += -e.size % tarformat.BLOCK  # padding: the buffer is zeros already
    if pos != chunk.raw_size:
        raise BuildError(f"chunk {chunk.key} has {pos} bytes, its plan says {chunk.raw_size}")
    return buf


def compress_chunk(fmt: str, chunk: Chunk, store: Store) -> bytes:
    return compress(fmt, chunk_bytes(chunk, store))


def _remove_abandoned(out: Path) -> None:
    """Partial archives of killed builds (never read, but clutter)."""
    from .fsio import pid_alive

    for part in out.parent.glob(f".{out.name}.*.part"):
        pid = part.name[len(out.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            part.unlink(missing_ok=True)


def compose(entries: list[Entry], out: Path, fmt: str, store: Store, *, mtime: int,
            jobs: int | None = None, progress: Callable[[int, int], None] | None = None,
            advance: Callable[[int, int, float], None] | None = None) -> ComposeResult:
    """Write `entries` (merged, archive order) as `out`; atomically, with its sha256.
    `progress(chunks done, of which reused)`; `advance(bytes done, of about, bytes per second)`
    counts the tar stream (the total is estimated: contents plus a block per entry)."""
    if fmt not in FORMATS:
        raise BuildError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    jobs = jobs or os.cpu_count() or 1
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.{os.getpid()}.", suffix=".part")
    sha = hashlib.sha256()
    raw_total = nchunks = reused = 0
    failure: list[BaseException] = []

    def produce(chunk: Chunk) -> tuple[bytes, bool]:
        """A chunk's compressed bytes from the cache, or compressed now (and cached)."""
        name = f"{fmt}-{chunk.key}"
        cached = store.get_chunk(name)
        if cached is not None:
            return cached, True
        payload = compress_chunk(fmt, chunk, store)
        store.put_chunk(name, payload)
        return payload, False

    # Chunks are read or compressed on all cores; one writer thread appends them in order and
    # hashes them, so that reading, compressing, writing and hashing overlap. The queue lets the
    # workers run a few chunks ahead of a slow one; it bounds the memory held by finished chunks.
    ahead: queue.Queue[tuple[Future[tuple[bytes, bool]], int] | None] = queue.Queue(maxsize=2 * jobs + 2)
    total = sum(e.size for e in entries if e.type == "file") + tarformat.BLOCK * (len(entries) + 1) if advance else 0
    t0 = time.monotonic()

    def writer(f: prealloc.GrowingFile) -> None:
        nonlocal reused
        done = raw_done = 0
        while (item := ahead.get()) is not None:
            fut, raw = item
            if failure:
                continue  # keep taking futures, so that the producer never blocks
            try:
                data, hit = fut.result()
                f.write(data)  # a full disk ends here: reported by the caller, not this thread
            except BaseException as e:  # reported by the caller below
                failure.append(e)
                continue
            sha.update(data)
            reused += hit
            done += 1
            if progress:
                progress(done, reused)
            if advance:
                raw_done += raw
                advance(min(raw_done, total), total, raw_done / max(time.monotonic() - t0, 1e-6))

    try:
        f = prealloc.GrowingFile(fd)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            # A daemon: an interrupt (Ctrl-C) that unwinds the main thread must not leave the
            # process waiting for a writer that waits for chunks.
            w = threading.Thread(target=writer, args=(f,), name="lxclayer-compose-writer", daemon=True)
            w.start()
            try:
                for chunk in plan_chunks(entries, fmt, mtime):
                    nchunks += 1
                    raw_total += chunk.raw_size
                    ahead.put((pool.submit(produce, chunk), chunk.raw_size))
                    if failure:
                        break
            finally:
                ahead.put(None)
                w.join()
            if failure:
                raise failure[0]
            end = compress(fmt, tarformat.trailer(raw_total))
            f.write(end)
            sha.update(end)
            f.finish()
        os.close(fd)
        fd = -1
        # No fsync: the rename below is atomic for every reader, and the archive is made again
        # from the store whenever its size, inode and mtime (or its sha256) no longer match.
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException as e:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(out)) from None  # say which file (a full disk)
        raise
    return ComposeResult(path=out, sha256=sha.hexdigest(), size=f.size, chunks=nchunks,
                         reused=reused, raw_size=raw_total)
