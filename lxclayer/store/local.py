"""The local store: the content-addressed store on this machine's disk.

Layout under the store root:

    layers/<input digest>/manifest    the layer's manifest (msgpack)
    layers/<input digest>/meta.json   output digest, builder, resolved artifacts, input record
    blobs/<hh>/<xxh3-128>             file contents, named by their hash
    artifacts/<hh>/<sha256>           downloaded .deb, wheels, tarballs, named by their sha256
    chunks/<hh>/<key>                 compressed archive chunks (see compose)
    composed/<key>.json               records of composed archives (sha256, size, stat)
    tmp/                              staging; everything appears elsewhere by rename
    locks/                            lock files
    roots/<xxh3-128>                  GC roots: links to lockfiles (see .roots)
    snapshots/<input digest>/         entries unpacked for overlay mounts (lxclayer.snapshots)
    statcache/<key>.msgpack           per project, the sources' stat cache (lxclayer.sources)
                                      and what no-op builds need not recompute: a lock's parse
                                      (lxclayer.lock.parsed), the host tools' versions (mmdebstrap)
    logs/                             build logs (lxclayer.progress)

Entries appear atomically (staged in tmp/, then renamed), so a killed build never leaves half an
entry. Reading an entry checks the manifest against the recorded output digest; reading a blob
checks its hash. Builds hold the store lock shared, `gc` holds it exclusive; building one layer
holds that layer's lock, so two concurrent builds of the same layer build it once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import xxhash

from .. import prealloc
from ..digest import CHUNK, canonical, digest, seal, seal_tag, unseal
from ..errors import StoreCorruption, UserError
from ..fsio import atomic_write, fsync_dir, pid_alive, rmtree, sha256_file
from ..manifest import Entry
from . import roots as gcroots
from .base import Keep, Store, Swept
from .model import LayerEntry, LayerMeta, Root

STORE_FORMAT = "1"


def _seal_of(meta: LayerMeta, raw: bytes) -> str:
    fields = msgspec.structs.asdict(msgspec.structs.replace(meta, seal=""))
    return "v2:" + xxhash.xxh3_128_hexdigest(raw + canonical(fields))


def _seal_ok(meta: LayerMeta, raw: bytes) -> bool:
    if meta.seal.startswith("v2:"):
        return meta.seal == _seal_of(meta, raw)
    return xxhash.xxh3_128_hexdigest(raw + meta.output.encode()) == meta.seal


_manifest_enc = msgspec.msgpack.Encoder()
_meta_dec = msgspec.json.Decoder(LayerMeta)


def default_root() -> Path:
    env = os.environ.get("LXCLAYER_STORE")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "lxclayer" / "store"


class LocalStore(Store):
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_root()
        self._blobs = str(self.root / "blobs")  # blob paths as strings: compose opens 20k of them

    # --- layout -------------------------------------------------------------------------------

    def _init(self) -> None:
        try:
            for sub in ("layers", "blobs", "artifacts", "chunks", "composed", "tmp", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the store: {e.strerror}", file=str(self.root)) from None
        fmt = self.root / "FORMAT"
        try:
            have = fmt.read_bytes()
        except FileNotFoundError:
            atomic_write(fmt, STORE_FORMAT.encode() + b"\n", durable=True)
            return
        except OSError as e:
            raise UserError(f"cannot read the store's FORMAT file: {e.strerror}", file=str(fmt)) from None
        if have.strip() != STORE_FORMAT.encode():
            raise UserError(
                f"store format {have.strip()[:40]!r} is not {STORE_FORMAT!r} (damaged or made by another"
                " version of lxclayer); use another --store", file=str(self.root),
            )

    def exists(self) -> bool:
        return self.root.is_dir()

    def layer_dir(self, input_digest: str) -> Path:
        return self.root / "layers" / input_digest

    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    def statcache_path(self, key: str) -> Path:
        return self.root / "statcache" / f"{key}.msgpack"

    def logs_dir(self) -> Path:
        return self.root / "logs"

    def blob_path(self, h: str) -> Path:
        return self.root / "blobs" / h[:2] / h

    def artifact_path(self, sha256: str) -> Path:
        return self.root / "artifacts" / sha256[:2] / sha256

    def chunk_path(self, name: str) -> Path:
        """Where the chunk `<format>-<key>` is kept: sharded by its key (not by the format,
        which would put every chunk of a format in one folder)."""
        key = name.rpartition("-")[2]
        return self.root / "chunks" / key[:2] / name

    # --- GC roots -----------------------------------------------------------------------------

    def register_root(self, lock_file: Path) -> Path:
        return gcroots.register(self.root / gcroots.ROOTS, lock_file)

    def roots(self) -> list[Root]:
        return gcroots.roots(self.root / gcroots.ROOTS)

    def remove_root(self, root: Root) -> None:
        gcroots.remove(root)

    # --- locking ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self, exclusive: bool = False) -> Iterator[LocalStore]:
        """Hold the store for a build (shared) or for gc (exclusive); clean stale staging."""
        self._init()
        fd = os.open(self.root / "locks" / "store.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            self._clean_tmp()
            yield self
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def project_lock(self, lock_file: Path) -> Iterator[None]:
        """Held by a build for one lockfile from before it reads the lock until after it writes
        it, so that two builds of one project (say of two formats) do not drop each other's
        entries: the second reads what the first wrote."""
        key = xxhash.xxh3_128_hexdigest(os.path.abspath(lock_file).encode("utf-8", "surrogateescape"))
        with self._flock(f"project-{key}"):
            yield

    @contextlib.contextmanager
    def layer_lock(self, input_digest: str) -> Iterator[None]:
        with self._flock(input_digest):
            yield

    @contextlib.contextmanager
    def _flock(self, name: str) -> Iterator[None]:
        fd = os.open(self.root / "locks" / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def staging(self, prefix: str = "stage") -> Iterator[Path]:
        """A fresh folder under tmp/, removed afterwards; locked while in use so that a later
        run can tell an abandoned one (from a killed build) from one in use.

        The lock file is made and locked under a name no cleaner looks at, then renamed to
        `<folder>.lock`, and only then is the folder made: another run's clean-up can never
        see the folder or its lock unlocked."""
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        name = f"{prefix}-{os.urandom(8).hex()}"
        pending = tmp / f".pending-{os.getpid()}-{name}"
        fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        path = tmp / name
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(pending, str(path) + ".lock")
            path.mkdir()
            yield path
        finally:
            rmtree(path)
            for leftover in (pending, Path(str(path) + ".lock")):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
            os.close(fd)

    def _clean_tmp(self) -> None:
        """Remove what killed runs left in tmp/: staging folders whose lock nobody holds, and
        loose files of interrupted blob or chunk writes whose process is gone. Other runs may
        be cleaning at the same time: whatever vanished meanwhile was theirs to remove."""
        tmp = self.root / "tmp"
        for lock in tmp.glob("*.lock"):
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            try:
                if os.path.exists(lock) and os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    rmtree(Path(str(lock)[: -len(".lock")]))
                    lock.unlink(missing_ok=True)
            finally:
                os.close(fd)
        for stray in [*tmp.glob("*.part-*"), *tmp.glob(".pending-*")]:
            if stray.name.startswith(".pending-"):
                # A lock file between its creation and its rename: its maker's pid is in the name.
                pid_text = stray.name.split("-", 2)[1]
                if pid_text.isdigit() and not pid_alive(int(pid_text)):
                    stray.unlink(missing_ok=True)
                continue
            try:
                pid = int(stray.name.rsplit("-", 1)[1])
            except ValueError:
                continue
            if not pid_alive(pid):
                stray.unlink(missing_ok=True)
        for dead in tmp.glob("dead-*"):
            rmtree(dead)

    # --- blobs --------------------------------------------------------------------------------

    def has_blob(self, h: str) -> bool:
        return self.blob_path(h).exists()

    def blob_size(self, h: str) -> int | None:
        """The size of the stored blob `h` (None if absent), without reading it."""
        try:
            return os.stat(f"{self._blobs}/{h[:2]}/{h}").st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _publish_file(self, staged: Path, final: Path, mode: int = 0o444) -> None:
        os.chmod(staged, mode)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)

    def _part(self) -> Path:
        return self.root / "tmp" / f"{os.urandom(8).hex()}.part-{os.getpid()}"

    def put_blob(self, data: bytes) -> str:
        h = xxhash.xxh3_128_hexdigest(data)
        if not self.has_blob(h):
            part = self._part()
            try:
                part.write_bytes(data)
                self._publish_file(part, self.blob_path(h))
            except BaseException:
                part.unlink(missing_ok=True)
                raise
        return h

    def put_blob_file(self, src: Path | str) -> tuple[str, int]:
        """Copy a file's bytes into the blob area; returns (hash, size)."""
        part = self._part()
        h = xxhash.xxh3_128()
        size = 0
        try:
            with open(src, "rb") as fin, open(part, "wb") as fout:
                while True:
                    block = fin.read(CHUNK)
                    if not block:
                        break
                    h.update(block)
                    fout.write(block)
                    size += len(block)
            digest_hex = h.hexdigest()
            if self.has_blob(digest_hex):
                part.unlink()
            else:
                self._publish_file(part, self.blob_path(digest_hex))
            return digest_hex, size
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    def read_blob(self, h: str, *, layer: str | None = None) -> bytes:
        """A blob's bytes, checked against its name."""
        path = self.blob_path(h)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreCorruption(f"blob {h} is missing", entry=str(path), layer=layer) from None
        if xxhash.xxh3_128_hexdigest(data) != h:
            raise StoreCorruption(f"blob {h} does not match its hash", entry=str(path), layer=layer)
        return data

    def iter_blob(self, h: str, *, layer: str | None = None) -> Iterator[bytes]:
        """A blob's bytes in blocks; raises StoreCorruption at the end if they do not match."""
        path = self.blob_path(h)
        hh = xxhash.xxh3_128()
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise StoreCorruption(f"blob {h} is missing", entry=str(path), layer=layer) from None
        with f:
            while block := f.read(CHUNK):
                hh.update(block)
                yield block
        if hh.hexdigest() != h:
            raise StoreCorruption(f"blob {h} does not match its hash", entry=str(path), layer=layer)

    def read_blob_into(self, h: str, size: int, buf: memoryview, start: int = 0, *,
                       layer: str | None = None) -> None:
        """Fill `buf` with bytes [start, start + len(buf)) of the blob `h` of `size` bytes.

        The whole blob is hashed even when only a part is wanted, so that a damaged blob is
        never used, and nothing is copied but into `buf` (compose reads every blob of a
        template this way)."""
        path = f"{self._blobs}/{h[:2]}/{h}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StoreCorruption(f"blob {h} is missing", entry=path, layer=layer) from None
        hh = xxhash.xxh3_128()
        stop = start + len(buf)
        try:
            scratch = memoryview(bytearray(min(CHUNK, max(start, size - stop)))) if start or stop < size else None
            pos = 0
            while pos < size:
                if start <= pos < stop:
                    target = buf[pos - start:]
                else:
                    limit = start if pos < start else size
                    target = scratch[:min(len(scratch), limit - pos)]
                n = os.readv(fd, [target])
                if n == 0:
                    raise StoreCorruption(f"blob {h} has {pos} bytes, its manifest says {size}",
                                          entry=path, layer=layer)
                hh.update(target[:n])
                pos += n
        finally:
            os.close(fd)
        if hh.hexdigest() != h:
            raise StoreCorruption(f"blob {h} does not match its hash", entry=path, layer=layer)

    # --- artifacts (.deb, wheels, tarballs) ------------------------------------------------------

    def put_artifact_file(self, src: Path, sha256: str, *, name: str) -> Path:
        """Move a downloaded file into the store if its sha256 is the expected one."""
        actual = sha256_file(src)
        if actual != sha256:
            src.unlink(missing_ok=True)
            raise UserError(f"{name}: sha256 is {actual}, expected {sha256}")
        final = self.artifact_path(sha256)
        self._publish_file(src, final)
        return final

    def artifact(self, sha256: str, *, name: str) -> Path | None:
        """The stored artifact, checked; a corrupt one is removed and reported as missing."""
        path = self.artifact_path(sha256)
        if not path.exists():
            return None
        if sha256_file(path) != sha256:
            path.unlink(missing_ok=True)
            return None
        return path

    # --- layer entries ------------------------------------------------------------------------

    def lookup(self, input_digest: str, *, layer: str | None = None) -> LayerEntry | None:
        """The entry stored under `input_digest`, with its manifest checked; None if absent.

        A damaged entry raises StoreCorruption."""
        d = self.layer_dir(input_digest)
        try:
            meta_bytes = (d / "meta.json").read_bytes()
        except FileNotFoundError:
            if not d.exists():
                return None
            raise StoreCorruption("store entry is incomplete (meta.json is missing)", entry=str(d),
                                  layer=layer) from None
        try:
            meta = _meta_dec.decode(meta_bytes)
            raw = (d / "manifest").read_bytes()
        except (msgspec.DecodeError, FileNotFoundError) as e:
            raise StoreCorruption(f"store entry is unreadable ({e})", entry=str(d), layer=layer) from None
        if meta.input != input_digest:
            raise StoreCorruption("store entry is filed under the wrong digest", entry=str(d), layer=layer)
        entry = LayerEntry(meta, raw=raw, where=str(d), layer=layer)
        if not meta.seal:
            entry.entries  # noqa: B018 (an entry stored before seals: decode and check it now)
        elif not _seal_ok(meta, raw):
            raise StoreCorruption("manifest or meta.json does not match the entry's seal",
                                  entry=str(d), layer=layer)
        return entry

    # --- composed archives (a stat cache, so that a no-op build does not hash the archive) ---

    def composed(self, key: str) -> dict[str, Any] | None:
        """The record of the archive composed for `key`, or None (also when it was altered:
        sealed, since a plain build trusts its sha256)."""
        try:
            payload = unseal((self.root / "composed" / f"{key}.json").read_bytes(), key.encode())
            return None if payload is None else msgspec.json.decode(payload)
        except (FileNotFoundError, msgspec.DecodeError):
            return None

    def record_composed(self, key: str, path: Path, sha256: str, size: int) -> None:
        """Remember a composed archive: its sha256 and size, and per output path (projects may
        share a store) the file's device, inode, size and mtime."""
        old = self.composed(key) or {}
        stats = old.get("stats", {}) if old.get("sha256") == sha256 else {}
        stats[str(path.resolve())] = _stat_key(os.stat(path))
        rec = {"sha256": sha256, "size": size, "stats": stats}
        atomic_write(self.root / "composed" / f"{key}.json", seal(msgspec.json.encode(rec), key.encode()))

    def output_matches(self, key: str, path: Path, known: dict[str, Any]) -> bool:
        """Whether `path` still holds the archive recorded: by stat, or by sha256 when in doubt
        (and then the stat is remembered, so the next run need not hash it again)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        if st.st_size != known["size"]:
            return False
        seen = known.get("stats", {}).get(str(path.resolve()))
        if seen != _stat_key(st):
            if sha256_file(path) != known["sha256"]:
                return False
            self.record_composed(key, path, known["sha256"], known["size"])
        return True

    def publish(self, meta: LayerMeta, entries: list[Entry]) -> LayerEntry:
        """Store a built layer under its input digest, atomically, once the entry gate
        (:mod:`lxclayer.entrycheck`) passes it: UnsafeEntry otherwise, and nothing is stored."""
        from ..entrycheck import UnsafeEntry, check_entries  # loaded when first publishing

        verdict = check_entries(entries, blob_size=self.blob_size)
        if not verdict.ok:
            raise UnsafeEntry(verdict, layer=meta.layer)
        raw = _manifest_enc.encode(entries)
        output = digest(entries)
        meta = msgspec.structs.replace(meta, output=output, seal="")
        meta = msgspec.structs.replace(meta, seal=_seal_of(meta, raw))
        final = self.layer_dir(meta.input)
        with self.staging("entry") as stage:
            d = stage / "entry"
            d.mkdir()
            (d / "manifest").write_bytes(raw)
            (d / "meta.json").write_bytes(msgspec.json.format(msgspec.json.encode(meta)))
            for f in d.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            try:
                os.rename(d, final)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # Someone else published it first: theirs stands if it is whole; a damaged one
                # (a deleted meta.json, a flipped bit) is replaced, so the store heals.
                try:
                    self.lookup(meta.input)
                except StoreCorruption:
                    self.remove_entry(meta.input)
                    os.rename(d, final)
        fsync_dir(final.parent)
        return LayerEntry(meta, entries)

    def remove_entry(self, input_digest: str) -> None:
        """Take a damaged entry out of the store (renamed away first, so it is never half there)."""
        d = self.layer_dir(input_digest)
        dead = self.root / "tmp" / f"dead-{input_digest}-{os.urandom(4).hex()}"
        try:
            os.rename(d, dead)
        except FileNotFoundError:
            return  # not there, or another run removed it first
        rmtree(dead)

    def evict(self, damage: StoreCorruption, stack: list[LayerEntry]) -> list[str]:
        """Remove what a damage report names: a layer entry, or a blob and every entry of
        `stack` that refers to it, so that they are built again (a blob is removed, not left
        for the rebuild to overwrite: putting a blob the store has already is a no-op)."""
        path = Path(damage.entry)
        removed: list[str] = []
        if path.parent == self.root / "layers":
            self.remove_entry(path.name)
            removed.append(path.name)
        elif path.parent.parent == self.root / "blobs":
            try:
                for _ in self.iter_blob(path.name):
                    pass
                return removed  # whole again: another build healed it meanwhile
            except StoreCorruption:
                pass
            path.unlink(missing_ok=True)
            for entry in stack:
                try:
                    uses = any(x.hash == path.name for x in entry.entries)
                except StoreCorruption:
                    uses = True  # its manifest is damaged too: it goes as well
                if uses:
                    self.remove_entry(entry.input)
                    removed.append(entry.input)
        return removed

    # --- compressed archive chunks --------------------------------------------------------------

    def get_chunk(self, name: str) -> bytes | None:
        """The chunk stored as `name`, or None; sealed with its name and bytes, so a damaged
        chunk, or a valid one under another chunk's name, is removed and reported absent."""
        path = self.chunk_path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        payload = unseal(data, name.encode())
        if payload is None:
            path.unlink(missing_ok=True)
        return payload

    def put_chunk(self, name: str, payload: bytes) -> None:
        path = self.chunk_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = self._part()
        try:
            prealloc.write_new(part, seal_tag(payload, name.encode()), payload)
            os.replace(part, path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    def remove_chunk(self, name: str) -> None:
        self.chunk_path(name).unlink(missing_ok=True)

    # --- garbage collection ---------------------------------------------------------------------

    def sweep(self, keep: Keep, *, dry_run: bool = False) -> Swept:
        """Remove every layer entry, blob, artifact, chunk and composed record `keep` does not
        name (call under `session(exclusive=True)`). Returns what was (or would be) freed."""
        out = Swept()
        for name in list(self.entries()):
            if name in keep.layers:
                out.kept += 1
                continue
            d = self.layer_dir(name)
            size = _size(d)
            out.layers += 1
            out.freed += size
            out.freed_entries.append((name, *self._describe(name), size))
            if not dry_run:
                self.remove_entry(name)
        for sub, names in (("blobs", keep.blobs), ("artifacts", keep.artifacts), ("chunks", keep.chunks)):
            base = self.root / sub
            if not base.is_dir():
                continue
            for f in base.glob("*/*"):
                # kept only where it is looked for (chunks of an older layout are freed)
                if f.name in names and (sub != "chunks" or f == self.chunk_path(f.name)):
                    continue
                setattr(out, sub, getattr(out, sub) + 1)
                out.freed += _size(f)
                if not dry_run:
                    f.unlink(missing_ok=True)
        if not dry_run:
            composed = self.root / "composed"
            for f in composed.glob("*.json") if composed.is_dir() else []:
                if f.stem not in keep.composed:
                    f.unlink(missing_ok=True)
            for lockf in (self.root / "locks").glob("*.lock"):
                if lockf.stem != "store" and lockf.stem not in keep.layers:
                    lockf.unlink(missing_ok=True)
            for d in (self.root / "tmp").glob("dead-*"):
                rmtree(d)
            gcroots.clean_temporaries(self.root / gcroots.ROOTS)
        return out

    def _describe(self, input_digest: str) -> tuple[str, str]:
        """The layer name and kind an entry was built for, as far as its record says."""
        try:
            entry = self.lookup(input_digest)
        except StoreCorruption:
            return "?", "damaged"
        if entry is None:
            return "?", "?"
        return entry.meta.layer or "?", entry.meta.kind

    def entries(self) -> Iterator[str]:
        d = self.root / "layers"
        if d.is_dir():
            yield from sorted(p.name for p in d.iterdir())


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _stat_key(st: os.stat_result) -> list[int]:
    """What says a file is unchanged without reading it. The ctime is in it because a byte
    changed with the mtime put back (`touch -d`) still moves the ctime, which no user can set."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


Store.default = LocalStore
