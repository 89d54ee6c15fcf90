"""Garbage collection: remove what no live GC root needs.

The roots are the lockfiles registered in the store by the builds that used it (see
:mod:`lxclayer.store.roots`), from every project that shares the store, not only this checkout's.
Kept: the layer entries every live root's lockfile names, the blobs and artifacts those
entries refer to, and the archive chunks and compose records of each locked stack. A root whose
lockfile is gone is dead and removed. gc refuses to run when the current project has no lockfile
(a mistyped --project would otherwise free everything), and when a root's lockfile cannot be
read (it might pin anything). Holds the store exclusively, so no build runs meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from . import outputs, snapshots
from .errors import StoreCorruption, UserError
from .lock import toml as locktoml
from .store import Keep, Store, Swept


@dataclass
class GcResult(Swept):
    live_roots: list[Path] = field(default_factory=list)
    dead_roots: list[Path] = field(default_factory=list)
    snapshots: int = 0  # snapshots freed (they go with their entries)
    snapshot_bytes: int = 0  # what the snapshots kept take on disk


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
            store.register_root(lock_file)
        keep = Keep()
        for root in store.roots():
            if not root.live:
                res.dead_roots.append(root.lock_file)
                if not dry_run:
                    store.remove_root(root)
                continue
            res.live_roots.append(root.lock_file)
            lock = locktoml.read(root.lock_file)  # unreadable: LockError, and nothing is freed
            if lock is None:
                continue
            stack = []
            for locked in lock.layers.values():
                keep.layers.add(locked.input)
                try:
                    entry = store.lookup(locked.input)
                except StoreCorruption:
                    entry = None  # damaged: a build replaces it; its blobs are not known
                if entry is None:
                    continue
                stack.append(entry)
                keep.blobs.update(e.hash for e in entry.entries if e.type == "file")
                for group in entry.meta.artifacts.values():
                    keep.artifacts.update(a.sha256 for a in group.values())
            if len(stack) != len(lock.layers):
                continue  # the stack is incomplete: its chunks cannot be named, and are not needed
            for fmt in lock.template.archives:
                if fmt in outputs.FORMATS:
                    outputs.exporter(fmt).keep(store, lock, stack, keep)
        swept = store.sweep(keep, dry_run=dry_run)
        for f in fields(Swept):
            setattr(res, f.name, getattr(swept, f.name))
        gone = snapshots.unneeded(store, keep.layers)  # snapshots go with their entries
        res.snapshots = len(gone)
        if not dry_run:
            for name in gone:
                snapshots.remove(store, name)
        res.snapshot_bytes = snapshots.disk_usage(store, skip=gone)
    return res

