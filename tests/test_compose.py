"""The chunked archive: same bytes whatever the cores or the cache, same tree as a plain archive."""

from __future__ import annotations

import gzip
import io
import os
import random
import shutil
import subprocess
import tarfile

import pytest
import zstandard

from lxclayer import compose as composer
from lxclayer.errors import StoreCorruption
from lxclayer.manifest import Entry
from lxclayer.store import Store

from .test_pct_extract import PCT_FLAGS

SDE = 1700000000


def synthetic_tree(store: Store, files: int = 1500) -> list[Entry]:
    """Many small files and some large ones: enough for several chunks."""
    rnd = random.Random(42)  # the same tree every run
    entries = [Entry(path="data", type="dir", mode=0o755, mtime=SDE)]
    for d in range(30):
        entries.append(Entry(path=f"data/d{d:02d}", type="dir", mode=0o750, uid=d, gid=d, mtime=SDE - d))
    for i in range(files):
        body = (f"file {i}\n" * (1 + i % 97)).encode() + rnd.randbytes(i % 2000)
        h = store.put_blob(body)
        entries.append(Entry(path=f"data/d{i % 30:02d}/f{i:05d}", type="file", mode=0o644, uid=i % 30,
                             gid=i % 30, mtime=SDE, size=len(body), hash=h))
    for i in range(4):
        body = rnd.randbytes(3 << 20)
        entries.append(Entry(path=f"data/big{i}", type="file", mode=0o600, mtime=SDE, size=len(body),
                             hash=store.put_blob(body)))
    entries.append(Entry(path="data/link", type="symlink", mode=0o777, mtime=SDE, target="d00/f00000"))
    entries.append(Entry(path="data/" + "long-name-" * 15, type="file", mode=0o644, mtime=SDE, size=0,
                         hash=store.put_blob(b"")))
    entries.append(Entry(path="data/ünïcode", type="file", mode=0o644, mtime=SDE, size=0, hash=store.put_blob(b"")))
    from lxclayer.manifest import sorted_entries

    return sorted_entries(entries)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    # Smaller chunks than in production, so that a small tree has many.
    monkeypatch.setattr(composer, "MIN_CHUNK", 256 << 10)
    monkeypatch.setattr(composer, "MAX_CHUNK", 2 << 20)
    # ...and a piece size that cuts the tree's 3 MiB files in three
    monkeypatch.setattr(composer, "PIECE", 1 << 20)
    store = Store(tmp_path / "store")
    store._init()
    return store, synthetic_tree(store)


def test_bytes_do_not_depend_on_cores_or_cache(tree, tmp_path):
    store, entries = tree
    outs = []
    for i, jobs in enumerate((1, 2, 4)):
        shutil.rmtree(store.root / "chunks")
        res = composer.compose(entries, tmp_path / f"a{i}.tar.gz", "tar.gz", store, mtime=SDE, jobs=jobs)
        assert res.reused == 0
        outs.append((tmp_path / f"a{i}.tar.gz").read_bytes())
    cached = composer.compose(entries, tmp_path / "c.tar.gz", "tar.gz", store, mtime=SDE, jobs=2)
    assert cached.chunks > 3 and cached.reused == cached.chunks
    outs.append((tmp_path / "c.tar.gz").read_bytes())
    # half the chunks cached, half not
    for i, chunk in enumerate(sorted((store.root / "chunks").rglob("tar.gz-*"))):
        if i % 2:
            chunk.unlink()
    half = composer.compose(entries, tmp_path / "h.tar.gz", "tar.gz", store, mtime=SDE, jobs=2)
    assert 0 < half.reused < half.chunks
    outs.append((tmp_path / "h.tar.gz").read_bytes())
    assert all(o == outs[0] for o in outs)


def test_an_edit_recompresses_only_nearby_chunks(tree, tmp_path):
    store, entries = tree
    first = composer.compose(entries, tmp_path / "a.tar.gz", "tar.gz", store, mtime=SDE)
    i = len(entries) // 2
    e = entries[i]
    body = b"edited\n"
    entries[i] = Entry(path=e.path, type="file", mode=e.mode, uid=e.uid, gid=e.gid, mtime=e.mtime,
                       size=len(body), hash=store.put_blob(body))
    second = composer.compose(entries, tmp_path / "b.tar.gz", "tar.gz", store, mtime=SDE)
    # the chunk holding the edit, and at most the next one or two until the boundaries agree again
    assert 1 <= second.chunks - second.reused <= 3
    assert second.reused >= first.chunks - 3


def _plain_tar(path) -> bytes:
    if str(path).endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes()), read_across_frames=True).read()


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.zst"])
def test_chunked_reads_like_one_plain_stream(tree, tmp_path, fmt):
    store, entries = tree
    out = tmp_path / f"a.{fmt}"
    res = composer.compose(entries, out, fmt, store, mtime=SDE)
    assert res.chunks > 3
    raw = _plain_tar(out)
    assert len(raw) % 10240 == 0 and res.raw_size + 1024 <= len(raw) < res.raw_size + 1024 + 10240
    # the same tar stream compressed in one piece
    plain = tmp_path / f"plain.{fmt}"
    plain.write_bytes(gzip.compress(raw, mtime=0) if fmt == "tar.gz" else zstandard.ZstdCompressor().compress(raw))
    with tarfile.open(out) if fmt == "tar.gz" else tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        names = tf.getnames()
        assert tf.extractfile("./data/d00/f00000").read().startswith(b"file 0\n")
        assert tf.getmember("./data/" + "long-name-" * 15).size == 0
        assert tf.getmember("./data/d05").uid == 5
    assert len(names) == len(entries) + 1
    if shutil.which("tar") and os.geteuid() == 0:
        flag = "-z" if fmt == "tar.gz" else "--zstd"
        trees = []
        for archive in (out, plain):
            dest = tmp_path / f"x-{archive.name}"
            dest.mkdir()
            with open(archive, "rb") as f:
                r = subprocess.run(["tar", "xpf", "-", flag, *PCT_FLAGS, "-C", str(dest)], stdin=f,
                                   capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            listing = subprocess.run(["find", ".", "-printf", "%p %m %U %G %s %T@ %l\n"], cwd=dest,
                                     capture_output=True, text=True, check=True).stdout
            # the root's own mtime is the time of extraction (pct never applies it)
            trees.append(sorted(line for line in listing.splitlines() if not line.startswith(". ")))
        assert trees[0] == trees[1]
        assert len(trees[0]) == len(entries)
    r = subprocess.run(["gzip" if fmt == "tar.gz" else "zstd", "-t", str(out)], capture_output=True)
    assert r.returncode == 0


def test_damaged_chunk_is_made_again(tree, tmp_path):
    store, entries = tree
    composer.compose(entries, tmp_path / "a.tar.gz", "tar.gz", store, mtime=SDE)
    good = (tmp_path / "a.tar.gz").read_bytes()
    victim = sorted((store.root / "chunks").rglob("tar.gz-*"))[1]
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF
    victim.write_bytes(bytes(data))
    res = composer.compose(entries, tmp_path / "b.tar.gz", "tar.gz", store, mtime=SDE)
    assert res.reused == res.chunks - 1
    assert (tmp_path / "b.tar.gz").read_bytes() == good


def test_no_chunk_is_larger_than_max_chunk_plus_a_piece(tree):
    store, entries = tree
    chunks = list(composer.plan_chunks(entries, "tar.gz", SDE))
    pieces = [c for c in chunks if c.piece]
    assert len(pieces) == 4 * 3  # the four 3 MiB files, each in three pieces
    assert max(c.raw_size for c in chunks) <= composer.MAX_CHUNK + composer.PIECE + 1024
    assert len({c.key for c in chunks}) == len(chunks)


def test_a_file_added_before_the_large_files_moves_none_of_their_pieces(tree):
    store, entries = tree
    before = {c.key for c in composer.plan_chunks(entries, "tar.gz", SDE) if c.piece}
    assert len(before) == 4 * 3
    body = b"x" * 100_001
    added = Entry(path="data/a-new", type="file", mode=0o644, mtime=SDE, size=len(body), hash=store.put_blob(body))
    first_big = next(i for i, e in enumerate(entries) if e.size == 3 << 20)
    assert entries[first_big - 1].path == "data" and entries[first_big].path == "data/big0"
    entries.insert(first_big, added)
    after = {c.key for c in composer.plan_chunks(entries, "tar.gz", SDE) if c.piece}
    assert after == before


def test_a_piece_is_not_made_from_a_blob_damaged_outside_its_range(tree, tmp_path):
    store, entries = tree
    composer.compose(entries, tmp_path / "a.tar.gz", "tar.gz", store, mtime=SDE)
    chunks = list(composer.plan_chunks(entries, "tar.gz", SDE))
    last_piece = next(c for c in chunks if c.piece and c.piece[0] == 2 << 20)
    e = last_piece.entries[0]
    blob = store.blob_path(e.hash)
    data = bytearray(blob.read_bytes())
    data[10] ^= 0xFF  # in the first piece's range, which stays cached
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    store.chunk_path(f"tar.gz-{last_piece.key}").unlink()
    with pytest.raises(StoreCorruption, match=e.hash):
        composer.compose(entries, tmp_path / "b.tar.gz", "tar.gz", store, mtime=SDE)
    assert not (tmp_path / "b.tar.gz").exists()
    assert not list(tmp_path.glob(".b.tar.gz.*"))
