"""Garbage collection: remove what no live GC root needs.

The roots are the lockfiles registered in the store by the builds that used it (see
:mod:`lxclayer.roots`), from every project that shares the store, not only this checkout's.
Kept: the layer entries every live root's lockfile names, the blobs and artifacts those
entries refer to, and the archive chunks and compose records of each locked stack. A root whose
lockfile is gone is dead and removed. gc refuses to run when the current project has no lockfile
(a mistyped --project would otherwise free everything), and when a root's lockfile cannot be
read (it might pin anything). Holds the store exclusively, so no build runs meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import compose as composer
from . import roots as gcroots
from . import snapshots
from .digest import digest
from .errors import StoreCorruption, UserError
from .lock import toml as locktoml
from .manifest import merge
from .store import Store, _rmtree


@dataclass
class GcResult:
    layers: int = 0
    blobs: int = 0
    chunks: int = 0
    artifacts: int = 0
    freed: int = 0
    kept: int = 0
    live_roots: list[Path] = field(default_factory=list)
    dead_roots: list[Path] = field(default_factory=list)
    # (input digest, layer name it was built for, kind, size): the entries freed, and why
    freed_entries: list[tuple[str, str, str, int]] = field(default_factory=list)
    snapshots: int = 0  # snapshots freed (they go with their entries)
    snapshot_bytes: int = 0  # what the snapshots kept take on disk


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def collect(store: Store, project_locks: list[Path], *, dry_run: bool = False,
            project: str = "") -> GcResult:
    """Free what no live root needs. `project_locks` are the current project's lockfiles: they
    are registered as roots first, and gc refuses to run without one."""
    res = GcResult()
    if not project_locks:
        raise UserError("this project has no lockfile, so gc cannot tell what it needs; build it first"
                        " (gc keeps what the lockfiles of every project using this store name)",
                        file=project or None)
    with store.session(exclusive=True):
        for lock_file in project_locks:
            gcroots.register(store.root, lock_file)
        keep_layers: set[str] = set()
        keep_blobs: set[str] = set()
        keep_artifacts: set[str] = set()
        keep_chunks: set[str] = set()
        keep_composed: set[str] = set()
        for root in gcroots.roots(store.root):
            if not root.live:
                res.dead_roots.append(root.lock_file)
                if not dry_run:
                    gcroots.remove(root)
                continue
            res.live_roots.append(root.lock_file)
            lock = locktoml.read(root.lock_file)  # unreadable: LockError, and nothing is freed
            if lock is None:
                continue
            stack = []
            for locked in lock.layers.values():
                keep_layers.add(locked.input)
                try:
                    entry = store.lookup(locked.input)
                except StoreCorruption:
                    entry = None  # damaged: a build replaces it; its blobs are not known
                if entry is None:
                    continue
                stack.append(entry)
                keep_blobs.update(e.hash for e in entry.entries if e.type == "file")
                for group in entry.meta.artifacts.values():
                    keep_artifacts.update(a.sha256 for a in group.values())
            if len(stack) != len(lock.layers):
                continue  # the stack is incomplete: its chunks cannot be named, and are not needed
            merged = merge((e.entries for e in stack), mtime=lock.template.source_date_epoch)
            for fmt in lock.template.archives:
                keep_chunks.update(f"{fmt}-{c.key}" for c in composer.plan_chunks(
                    merged, fmt, lock.template.source_date_epoch))
                keep_composed.add(digest({"outputs": [e.output for e in stack], "fmt": fmt,
                                          "compressor": composer.compressor_id(fmt),
                                          "mtime": lock.template.source_date_epoch}))
        res.kept = len(keep_layers & set(store.entries()))
        for name in list(store.entries()):
            if name not in keep_layers:
                d = store.layer_dir(name)
                size = _size(d)
                res.layers += 1
                res.freed += size
                layer, kind = _describe(store, name)
                res.freed_entries.append((name, layer, kind, size))
                if not dry_run:
                    store.remove_entry(name)
        for sub, keep, attr in (("blobs", keep_blobs, "blobs"), ("artifacts", keep_artifacts, "artifacts"),
                                ("chunks", keep_chunks, "chunks")):
            base = store.root / sub
            if not base.is_dir():
                continue
            for f in base.glob("*/*"):
                # kept only where it is looked for (chunks of an older layout are freed)
                if f.name in keep and (sub != "chunks" or f == store.chunk_path(f.name)):
                    continue
                setattr(res, attr, getattr(res, attr) + 1)
                res.freed += _size(f)
                if not dry_run:
                    f.unlink(missing_ok=True)
        composed = store.root / "composed"
        if composed.is_dir() and not dry_run:
            for f in composed.glob("*.json"):
                if f.stem not in keep_composed:
                    f.unlink(missing_ok=True)
        gone = snapshots.unneeded(store, keep_layers)
        res.snapshots = len(gone)
        if not dry_run:
            for name in gone:
                snapshots.remove(store, name)
        res.snapshot_bytes = snapshots.disk_usage(store, skip=gone)
        if not dry_run:
            for lockf in (store.root / "locks").glob("*.lock"):
                if lockf.stem != "store" and lockf.stem not in keep_layers:
                    lockf.unlink(missing_ok=True)
            for d in (store.root / "tmp").glob("dead-*"):
                _rmtree(d)
            gcroots.clean_temporaries(store.root)
    return res


def _describe(store: Store, input_digest: str) -> tuple[str, str]:
    """The layer name and kind an entry was built for, as far as its record says."""
    try:
        entry = store.lookup(input_digest)
    except StoreCorruption:
        return "?", "damaged"
    if entry is None:
        return "?", "?"
    return entry.meta.layer or "?", entry.meta.kind
