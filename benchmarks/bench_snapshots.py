#!/usr/bin/env python3
"""Snapshots (issue 11): what making, checking and storing the snapshots of a locked stack costs.

    LXCLAYER_STORE=/path/to/store python benchmarks/bench_snapshots.py [--lock locks/X.lock] [--repeat 3]

Needs root and a store holding every layer of the lock (e.g. after `lxclayer build --locked`).
Works in a copy-free scratch store folder: the snapshots are made under a temporary
`<tmp>/snapshots/` beside nothing the real store trusts, and removed at the end. Prints, per
layer and for the whole stack: the time to make the snapshot from the store entry (cold), the
time of the lstat check a build does before using it (warm; median of --repeat), and its size
next to the store's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lxclayer import snapshots  # noqa: E402
from lxclayer.lock import toml as locktoml  # noqa: E402
from lxclayer.manifest import merge  # noqa: E402
from lxclayer.store import Store, default_root  # noqa: E402


class ScratchSnapshots:
    """The real store's entries and blobs, with the snapshots kept in a scratch folder."""

    def __init__(self, store: Store, scratch: Path):
        self._store = store
        self.root = scratch

    def __getattr__(self, name):
        return getattr(self._store, name)


def du(path: Path) -> int:
    seen, total = set(), 0
    for dirpath, dirs, files in os.walk(path):
        for n in dirs + files:
            st = os.lstat(os.path.join(dirpath, n))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lock", default=str(REPO / "locks/debian-12-stock-analysis.lock"))
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    store = Store(os.environ.get("LXCLAYER_STORE") or default_root())
    lock = locktoml.read(Path(a.lock))
    sde = lock.template.source_date_epoch
    scratch = Path(tempfile.mkdtemp(prefix="bench-snapshots-", dir=store.root.parent))
    try:
        with store.session():
            sv = ScratchSnapshots(store, scratch)
            below = []
            rows = []
            for name, locked in lock.layers.items():
                entry = store.lookup(locked.input)
                if entry is None:
                    print(f"{name}: not in the store; build --locked first", file=sys.stderr)
                    return 2
                tree = {e.path: e for e in merge([b.entries for b in below], mtime=sde)} if below else {}
                t0 = time.perf_counter()
                snapshots.ensure(sv, locked.input, entry.output, lambda e=entry: e.entries, tree.get, mtime=sde)
                made = time.perf_counter() - t0
                checks = []
                for _ in range(a.repeat):
                    t0 = time.perf_counter()
                    assert snapshots.check(sv, locked.input, entry.output) is None
                    checks.append(time.perf_counter() - t0)
                size = du(snapshots.snapshot_dir(sv, locked.input))
                rows.append((name, len(entry.entries), made, statistics.median(checks), size))
                below.append(entry)
        print(f"{'layer':24} {'entries':>8} {'make s':>8} {'check s':>8} {'size MiB':>9}")
        for name, n, made, check, size in rows:
            print(f"{name:24} {n:8} {made:8.2f} {check:8.3f} {size / 2**20:9.1f}")
        print(f"{'total':24} {sum(r[1] for r in rows):8} {sum(r[2] for r in rows):8.2f}"
              f" {sum(r[3] for r in rows):8.3f} {sum(r[4] for r in rows) / 2**20:9.1f}")
        print(f"store (layers + blobs): {(du(store.root / 'layers') + du(store.root / 'blobs')) / 2**20:.1f} MiB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
