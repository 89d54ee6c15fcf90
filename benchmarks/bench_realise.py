#!/usr/bin/env python3
"""Realisation on snapshots (issue 11): what a program layer costs besides its programs.

    LXCLAYER_STORE=/path/to/warm/store python benchmarks/bench_realise.py [--repeat 3] [--skip-cold]

Needs root, mmdebstrap, network (apt-get update when `jq` is resolved), and a warm store
holding every layer of the lock and every artifact (.deb, wheel) it pins. The jq rounds run in
the warm store itself and remove what they added afterwards (a copy's snapshots would not be
trusted); the cold build runs in a scratch store holding hard links to the warm store's
artifacts only; the project is copied. Measures, as
whole `lxclayer` commands in fresh processes, in this order:

1. no-op `build --locked` in the warm store (median of --repeat);
2. one package added: `jq` added to the `redis` layer of a copy of the project, then
   `lxclayer build` (resolves redis, rebuilds the 7 program layers above and composes), each
   round as the first edit on a fresh clone's store: apt's kept lists set aside, and what the
   round added (entries, snapshots, chunks, layer blobs, jq's downloads) removed after it;
3. cold `build --locked` into a store holding only the artifacts (downloads cached), against
   an mmdebstrap run that installs the union of the lock's packages from a local repository of
   the same .debs into a tarball, then `gzip -6` of it (the baseline, in the same run);

and prints per program layer its build time, the time of the programs it ran, and the
difference (the overhead), from `build --json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lxclayer.debian.repo import make_repo  # noqa: E402
from lxclayer.lock import toml as locktoml  # noqa: E402
from lxclayer.store import Store, default_root  # noqa: E402

PROGRAM_KINDS = ("mmdebstrap", "apt", "script", "uv")


TEMPLATE = "debian-12-stock-analysis"


def lxclayer(project: Path, store: Path, *args: str) -> tuple[float, dict | None, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), LXCLAYER_STORE=str(store))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "lxclayer", "--project", str(project), *args, "--template", TEMPLATE],
                       capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"lxclayer {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return dt, (json.loads(r.stdout) if "--json" in args else None), r.stderr


def artifacts_only(warm: Path, dest: Path) -> None:
    """A new store holding hard links to the warm store's artifacts (downloads) and nothing else."""
    dest.mkdir()
    subprocess.run(["cp", "-al", str(warm / "artifacts"), str(dest / "artifacts")], check=True)


KEPT_AREAS = ("chunks", "composed", "artifacts")  # what a round adds besides entries and snapshots
APT_LISTS = "snapshots/.apt-lists"


def store_files(warm: Path) -> set[str]:
    return {str(p.relative_to(warm)) for area in KEPT_AREAS if (warm / area).is_dir()
            for p in (warm / area).rglob("*") if p.is_file()}


def forget_added(warm: Path, lock, new_lock: Path, before: set[str]) -> None:
    """Remove what a round added to the warm store: its entries and snapshots, and the chunks,
    layer blobs, composed records and downloads that were not there `before`, so that every
    round is a first edit (jq's packages downloaded, the new chunks and blobs compressed)."""
    from lxclayer import snapshots

    keep = {la.input for la in lock.layers.values()}
    added = store_files(warm) - before
    with Store(warm).session() as st:
        for la in locktoml.read(new_lock).layers.values():
            if la.input not in keep:
                st.remove_entry(la.input)
                snapshots.remove(st, la.input)
        # The uv program taken out of its wheel stays (a store that built the template has it;
        # only gc takes it away): it is not part of what adding a package costs.
        for rel in [r for r in added if Path(r).name.startswith("uvprogram-")]:
            program = st.get_chunk(Path(rel).name)
            added -= {rel, *([str(st.artifact_path(program.decode()).relative_to(warm))] if program else [])}
    for rel in added:
        (warm / rel).unlink(missing_ok=True)


def move_lists(src: Path, dest: Path) -> None:
    """Move apt's kept lists (one folder per set of sources) from `src` to `dest`; a fresh
    clone's store has none, so its first resolve fetches the full indexes."""
    dest.mkdir(parents=True, exist_ok=True)
    for d in list(src.iterdir()) if src.is_dir() else []:
        if (dest / d.name).exists():
            shutil.rmtree(d)
        else:
            d.rename(dest / d.name)


def overheads(report: dict) -> list[tuple[str, str, float, float]]:
    return [(la["name"], la["kind"], la["seconds"], la["program_seconds"]) for la in report["layers"]
            if la["state"] == "built" and la["kind"] in PROGRAM_KINDS]


def print_layers(title: str, rows: list[tuple[str, str, float, float]]) -> None:
    print(f"\n{title}")
    print(f"  {'layer':20} {'kind':10} {'total s':>8} {'programs s':>10} {'overhead s':>10}")
    for name, kind, total, prog in rows:
        print(f"  {name:20} {kind:10} {total:8.1f} {prog:10.1f} {total - prog:10.1f}")


def mmdebstrap_baseline(store: Store, lock, work: Path, suite: str) -> tuple[float, float, int]:
    """(mmdebstrap s, gzip -6 s, tar.gz bytes) for the union of the lock's packages."""
    pins = {}
    for la in lock.layers.values():
        pins.update(la.artifacts.get("packages", {}))
    paths = {}
    for a in pins.values():
        p = store.artifact(a.sha256, name=a.name)
        if p is None:
            sys.exit(f"{a.name} {a.version} is not in the store; build the template first")
        paths[a.sha256] = p
    repo = work / "repo"
    make_repo(repo, pins, paths, suite=suite, date="Tue, 25 Nov 2025 00:00:00 UTC")
    tar = work / "baseline.tar"
    cmd = ["unshare", "--mount", "--propagation", "private", "--", "mmdebstrap", "--mode=root", "--format=tar",
           "--variant=minbase", "--architectures=amd64", "--dpkgopt=force-unsafe-io",
           "--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount",
           "--include=" + ",".join(sorted(pins)), suite, str(tar), f"deb [trusted=yes] file://{repo} ./"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, SOURCE_DATE_EPOCH="1764028800"))
    mm = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"mmdebstrap failed:\n{r.stderr[-3000:]}")
    t0 = time.perf_counter()
    with open(tar, "rb") as fi, open(work / "baseline.tar.gz", "wb") as fo:
        subprocess.run(["gzip", "-6", "-n"], stdin=fi, stdout=fo, check=True)
    gz = time.perf_counter() - t0
    return mm, gz, (work / "baseline.tar.gz").stat().st_size


def main() -> int:
    global TEMPLATE
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", type=Path, default=REPO)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--template", default="debian-12-stock-analysis", help="The template to build (its lock: locks/NAME.lock).")
    ap.add_argument("--suite", default="bookworm", help="The template's Debian suite (for the baseline).")
    ap.add_argument("--skip-cold", action="store_true", help="Skip the cold build and the mmdebstrap baseline.")
    a = ap.parse_args()
    TEMPLATE = a.template
    warm = Path(os.environ.get("LXCLAYER_STORE") or default_root())
    lock_path = a.project / f"locks/{TEMPLATE}.lock"
    lock = locktoml.read(lock_path)
    scratch = Path(tempfile.mkdtemp(prefix="bench-realise-", dir=warm.parent))
    try:
        # 1. no-op
        noop = []
        for _ in range(a.repeat):
            dt, _, _ = lxclayer(a.project, warm, "build", "--locked", "--out", str(scratch / "dist-noop"))
            noop.append(dt)
        print(f"no-op build --locked: {statistics.median(noop):.2f} s median ({min(noop):.2f}-{max(noop):.2f})")

        # 2. jq added to redis
        proj = scratch / "project"
        proj.mkdir()
        for d in ("layers", "locks", "templates"):
            if (a.project / d).is_dir():
                shutil.copytree(a.project / d, proj / d, symlinks=True)
        if (a.project / "lxclayer.toml").is_file():
            shutil.copy(a.project / "lxclayer.toml", proj / "lxclayer.toml")
        toml = proj / "layers/redis/layer.toml"
        text = toml.read_text()
        assert 'packages = ["redis-server", "redis-tools"]' in text
        toml.write_text(text.replace('"redis-tools"]', '"redis-tools", "jq"]'))
        # In the warm store itself (a copy's snapshots are not trusted: its folders have new
        # inodes and ctimes), taking out afterwards what the round added, and with apt's kept
        # lists set aside: every round is the first edit on a fresh clone's store.
        jq, last = [], None
        aside = scratch / "apt-lists"
        try:
            for _ in range(a.repeat):
                move_lists(warm / APT_LISTS, aside)
                before = store_files(warm)
                shutil.copy(lock_path, proj / f"locks/{TEMPLATE}.lock")
                dt, last, _ = lxclayer(proj, warm, "build", "--json", "--out", str(scratch / "dist-jq"))
                jq.append(dt)
                forget_added(warm, lock, proj / f"locks/{TEMPLATE}.lock", before)
        finally:
            move_lists(warm / APT_LISTS, scratch / "apt-lists-of-the-rounds")
            move_lists(aside, warm / APT_LISTS)
        print(f"jq added to redis, `lxclayer build`, as a first edit (apt's full indexes fetched, jq's packages"
              f" downloaded, new chunks and blobs compressed): {statistics.median(jq):.1f} s median"
              f" ({min(jq):.1f}-{max(jq):.1f}; {len(jq)} rounds)")
        for x in (last or {}).get("archives", []):
            made = f", {x['ahead']} made while the layers built" if x.get("ahead") else ""
            print(f"  {x['format']}: {x['reused']} of {x['chunks']} parts reused{made}")
        assert last is not None
        print_layers("layers rebuilt by the jq change (last round):", overheads(last))

        # 3. cold build against mmdebstrap + gzip -6
        if not a.skip_cold:
            store = scratch / "store-cold"
            artifacts_only(warm, store)
            # tar.gz only: the baseline makes one tarball (the oci image's compose is extra work).
            dt, cold, _ = lxclayer(a.project, store, "build", "--locked", "--json", "--format", "tar.gz",
                                   "--out", str(scratch / "dist-cold"))
            assert cold is not None
            want = lock.template.archives["tar.gz"].sha256
            got = next(x["sha256"] for x in cold["archives"] if x["format"] == "tar.gz")
            print(f"\ncold build --locked --format tar.gz (artifacts cached): {dt:.1f} s; tar.gz sha256 {got[:16]}"
                  f" {'= the lock' if got == want else '!= the lock ' + want[:16]}")
            print_layers("cold build, program layers:", overheads(cold))
            shutil.rmtree(store)
            work = scratch / "baseline"
            work.mkdir()
            with Store(warm).session() as st:
                mm, gz, size = mmdebstrap_baseline(st, lock, work, a.suite)
            base = mm + gz
            print(f"baseline: mmdebstrap {mm:.1f} s + gzip -6 {gz:.1f} s = {base:.1f} s ({size / 2**20:.0f} MiB)")
            print(f"cold build / baseline: {dt / base:.2f}x")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
