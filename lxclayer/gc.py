"""Garbage collection: remove what no lockfile in locks/ needs.

Kept: the layer entries every lockfile names, the blobs and artifacts those entries refer to,
and the archive chunks and compose records of each locked stack. Holds the store exclusively,
so no build runs meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import compose as composer
from .digest import digest
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


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def collect(store: Store, locks_dir: Path, *, dry_run: bool = False) -> GcResult:
    res = GcResult()
    with store.session(exclusive=True):
        keep_layers: set[str] = set()
        keep_blobs: set[str] = set()
        keep_artifacts: set[str] = set()
        keep_chunks: set[str] = set()
        keep_composed: set[str] = set()
        for lock_file in sorted(locks_dir.glob("*.lock")) if locks_dir.is_dir() else []:
            lock = locktoml.read(lock_file)
            if lock is None:
                continue
            stack = []
            for locked in lock.layers.values():
                keep_layers.add(locked.input)
                entry = store.lookup(locked.input)
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
                res.layers += 1
                res.freed += _size(d)
                if not dry_run:
                    store.remove_entry(name)
        for sub, keep, attr in (("blobs", keep_blobs, "blobs"), ("artifacts", keep_artifacts, "artifacts"),
                                ("chunks", keep_chunks, "chunks")):
            base = store.root / sub
            if not base.is_dir():
                continue
            for f in base.glob("*/*"):
                if f.name in keep:
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
        if not dry_run:
            for lockf in (store.root / "locks").glob("*.lock"):
                if lockf.stem != "store" and lockf.stem not in keep_layers:
                    lockf.unlink(missing_ok=True)
            for d in (store.root / "tmp").glob("dead-*"):
                _rmtree(d)
    return res
