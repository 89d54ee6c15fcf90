#!/usr/bin/env python3
"""The export phase alone (issue 24): a template's outputs composed cold from a warm store,
one exporter after the other against side by side (as `lxclayer build` runs them now).

    python benchmarks/bench_export.py --store /var/tmp/store-copy [--template NAME] [--rounds 1]

Takes the stack the lock pins (every layer by the lock's input digest, as a `--locked` build
finds them; the host tools need not match the lock's), and per round and mode: removes the
store's compose chunks, OCI layer records and composed-archive records (THE STORE IS CHANGED:
use a copy), then writes every format of the template into a scratch folder and times it.
Checks each output's sha256 against the lock's. Prints per mode the wall time and each
exporter's own time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lxclayer import build as b  # noqa: E402
from lxclayer.definitions import load_project  # noqa: E402
from lxclayer.lock import toml as locktoml  # noqa: E402
from lxclayer.store import Store  # noqa: E402


def cold(store: Store) -> None:
    for folder in ("chunks", "composed"):
        p = store.root / folder
        if p.is_dir():
            shutil.rmtree(p)
            p.mkdir()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--template", default=None)
    ap.add_argument("--project", type=Path, default=REPO)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--mode", choices=["both", "sequential", "parallel"], default="both")
    a = ap.parse_args()
    project = load_project(root=a.project, template=a.template)
    lock = locktoml.read(project.lock_file)
    store = Store(a.store)
    entries = []
    for layer in project.layers:
        e = store.lookup(lock.layers[layer.name].input, layer=layer.name)
        if e is None:
            print(f"{layer.name}: not in the store (by the lock's input digest)", file=sys.stderr)
            return 2
        entries.append(e)
    formats = list(project.template.formats)
    stack_lock = b._lock_from(project, entries, [], None)
    bad = 0
    for rnd in range(a.rounds):
        modes = {"both": ("one after the other", "side by side"), "sequential": ("one after the other",),
                 "parallel": ("side by side",)}[a.mode]
        for mode in modes:
            cold(store)
            with tempfile.TemporaryDirectory(dir="/var/tmp") as out, store.session():
                tree = b._checked_tree(entries, project.template.source_date_epoch)
                t0 = time.monotonic()
                if mode == "side by side":
                    infos = b._export_all(project, store, tree, formats, Path(out), entries, stack_lock, None,
                                          b.Events())
                else:
                    infos = [b._export(project, store, tree, f, Path(out), entries, stack_lock, None, b.Events())
                             for f in formats]
                wall = time.monotonic() - t0
            each = ", ".join(f"{i.format} {i.seconds:.1f} s" for i in infos)
            print(f"round {rnd + 1}, {mode}: {wall:.1f} s ({each})", flush=True)
            for i in infos:
                want = lock.template.archives[i.format].sha256
                if i.sha256 != want:
                    bad += 1
                    print(f"  {i.format}: sha256 {i.sha256} is not the lock's {want}", file=sys.stderr)
    print("sha256s: " + ("all the lock's" if not bad else f"{bad} differ"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
