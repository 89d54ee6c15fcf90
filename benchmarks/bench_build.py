#!/usr/bin/env python3
"""Edit-build loop benchmark: lxclayer against GNU tar + gzip/zstd, measured in the same run.

    python benchmarks/bench_build.py --synthetic-mb 1024      # a synthetic tree of about 1 GB
    python benchmarks/bench_build.py --template               # the stock-analysis template (needs root)

For each tree it measures, as whole commands (`python -m lxclayer ...` in a fresh process):
- cold build (empty store) and cold compose alone (layers cached, no chunks cached);
- no-op build (nothing changed, archive present);
- one-edit build (one config file of one layer changed);
- the baselines on the same tree: `tar --sort=name ... | gzip -6`, `... | zstd -3 -T1`;
and prints the ratios and the peak memory (max RSS) of each lxclayer command. Each measurement
is repeated (--repeat, 3 rounds by default; the baseline once per round) and reported as the
median with its range, since a shared VM's figures move from run to run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TAR_FLAGS = ["--sort=name", "--mtime=@1700000000", "--clamp-mtime", "--numeric-owner", "--format=pax",
             "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"]


def run_timed(cmd: list[str], **kw) -> tuple[float, int, subprocess.CompletedProcess]:
    """Wall time and peak RSS (KiB) of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if r.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{r.stderr}")
    return dt, max(after, before), r


def lxclayer(project: Path, store: Path, *args: str) -> tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure lxclayer, not the compiling of its sources
    # Measure one process: run it through a tiny wrapper that reports its own max RSS.
    code = ("import resource,sys;sys.argv=['lxclayer']+sys.argv[1:]\n"
            "import lxclayer.cli as c\ntry:\n c.main()\nfinally:\n"
            " sys.stderr.write('MAXRSS %d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    dt, _, r = run_timed([sys.executable, "-c", code, "--project", str(project), "--store", str(store), *args],
                         env=env)
    rss = int(r.stderr.rsplit("MAXRSS ", 1)[1].split()[0]) if "MAXRSS" in r.stderr else 0
    return dt, rss


def baseline(tree: Path, out: Path, compressor: list[str]) -> float:
    t0 = time.perf_counter()
    with open(out, "wb") as f:
        tar = subprocess.Popen(["tar", "-C", str(tree), *TAR_FLAGS, "-cf", "-", "."], stdout=subprocess.PIPE)
        comp = subprocess.Popen(compressor, stdin=tar.stdout, stdout=f)
        tar.stdout.close()
        comp.wait()
        tar.wait()
    return time.perf_counter() - t0


def synthetic_project(root: Path, mb: int) -> tuple[Path, Path]:
    """A project whose base layer is a tarball of real files (the host's /usr), about `mb` MB,
    with a small files layer on top; returns (project, the config file to edit)."""
    base = root / "layers" / "base"
    base.mkdir(parents=True)
    tarpath = base / "base.tar"
    budget = mb << 20
    total = 0
    with tarfile.open(tarpath, "w", format=tarfile.PAX_FORMAT) as tf:
        for top in ("/usr/lib", "/usr/share", "/usr/bin", "/usr/include"):
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                for name in sorted(filenames):
                    p = os.path.join(dirpath, name)
                    if os.path.islink(p) or not os.path.isfile(p):
                        continue
                    size = os.path.getsize(p)
                    if size > 64 << 20:
                        continue
                    tf.add(p, arcname="." + p, recursive=False)
                    total += size
                    if total >= budget:
                        break
                if total >= budget:
                    break
            if total >= budget:
                break
    # Hashed in blocks: Linux keeps a process's peak RSS across fork and exec, so a benchmark that
    # held the tarball in memory would show it as every lxclayer command's peak.
    h = hashlib.sha256()
    with open(tarpath, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    sha = h.hexdigest()
    (base / "layer.toml").write_text(f'kind = "import"\npath = "base.tar"\nsha256 = "{sha}"\n')
    cfg = root / "layers" / "config" / "root" / "etc"
    cfg.mkdir(parents=True)
    (cfg / "app.conf").write_text("setting = 1\n")
    (root / "layers" / "config" / "layer.toml").write_text('kind = "files"\n')
    (root / "layers" / "template.toml").write_text(textwrap.dedent("""\
        name = "bench"
        version = "1"
        source_date_epoch = 1700000000
        layers = ["base", "config"]
        """))
    (root / "locks").mkdir()
    return root, cfg / "app.conf"


def measure(project: Path, edit: Path, work: Path, fmt: str, store: Path | None = None, repeat: int = 3) -> dict:
    """Cold build (unless a warm `store` is given), then `repeat` rounds of cold compose, no-op
    and one-edit builds and of the baseline; each figure is a list with one value per round."""
    res: dict = {"cold": None, "cold_rss": 0}
    if store is None:
        store = work / "store"
        res["cold"], res["cold_rss"] = lxclayer(project, store, "build", "--format", fmt)
    else:
        lxclayer(project, store, "build", "--format", fmt)
    archive = next((project / "dist").glob(f"*.{fmt}"))
    res["size"] = archive.stat().st_size
    tree = work / "tree"
    if not tree.exists():
        tree.mkdir()
        subprocess.run(["tar", "-xf", str(archive), "-C", str(tree)], check=True)
    original = edit.read_text()
    for key in ("cold_compose", "compose_rss", "noop", "noop_rss", "edit", "edit_rss", "base_single"):
        res[key] = []
    for _ in range(repeat):
        for chunk in (store / "chunks").rglob(f"{fmt}-*"):
            chunk.unlink()
        archive.unlink()
        for key, rss in (("cold_compose", "compose_rss"), ("noop", "noop_rss")):
            t, m = lxclayer(project, store, "build", "--format", fmt)
            res[key].append(t)
            res[rss].append(m)
        edit.write_text(original + f"edited = {time.time()}\n")
        t, m = lxclayer(project, store, "build", "--format", fmt)
        res["edit"].append(t)
        res["edit_rss"].append(m)
        # the baseline on the same tree, extracted, in the same round
        out = work / ("b.tar.gz" if fmt == "tar.gz" else "b.tar.zst")
        comp = ["gzip", "-6", "-n"] if fmt == "tar.gz" else ["zstd", "-3", "-T1", "-q"]
        res["base_single"].append(baseline(tree, out, comp))
        res["base_size"] = out.stat().st_size
    edit.write_text(original)
    return res


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else ""


def report(name: str, fmt: str, r: dict) -> None:
    med = statistics.median
    print(f"\n## {name}, {fmt} (median of {len(r['base_single'])} rounds, range after it)")
    print(f"archive {r['size'] / 2**20:.1f} MiB; baseline single-threaded {r['base_size'] / 2**20:.1f} MiB "
          f"({100 * (r['size'] / r['base_size'] - 1):+.2f}%)")
    b = med(r["base_single"])
    rows = [("baseline: tar --sort=name | " + ("gzip -6" if fmt == "tar.gz" else "zstd -3 -T1"),
             r["base_single"], 0),
            *([("lxclayer cold build (empty store)", [r["cold"]], r["cold_rss"])] if r["cold"] else []),
            ("lxclayer cold compose (layers cached)", r["cold_compose"], max(r["compose_rss"])),
            ("lxclayer one-edit build", r["edit"], max(r["edit_rss"])),
            ("lxclayer no-op build", r["noop"], max(r["noop_rss"]))]
    print(f"{'command':40} {'seconds':>8} {'range':>12} {'x faster':>9} {'max RSS':>9}")
    for i, (label, ts, rss) in enumerate(rows):
        t = med(ts)
        ratio = "" if i == 0 else f"{b / t:9.1f}"
        print(f"{label:40} {t:8.2f} {_spread(ts):>12} {ratio:>9} {f'{rss / 1024:6.0f} MiB' if rss else '':>9}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic-mb", type=int, default=0, help="size of the synthetic tree (0: skip)")
    ap.add_argument("--template", action="store_true", help="also measure the stock-analysis template")
    ap.add_argument("--formats", default="tar.gz,tar.zst")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of each measurement (median and range)")
    ap.add_argument("--store", type=Path, default=None,
                    help="a warm store for the template (skips its cold build, which takes minutes)")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, {os.uname().machine}, Python {sys.version.split()[0]}")
    for fmt in args.formats.split(","):
        if args.synthetic_mb:
            with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
                project, edit = synthetic_project(Path(tmp) / "proj", args.synthetic_mb)
                report(f"synthetic tree, {args.synthetic_mb} MB of /usr", fmt, measure(project, edit, Path(tmp), fmt, repeat=args.repeat))
        if args.template:
            with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
                work = Path(tmp)
                project = work / "proj"
                shutil.copytree(REPO, project, ignore=shutil.ignore_patterns(".git", "dist", ".venv", "__pycache__"))
                edit = project / "layers" / "redis-cluster" / "root" / "etc" / "redis" / "cluster" / "redis.conf"
                report("stock-analysis template", fmt, measure(project, edit, work, fmt, args.store, args.repeat))


if __name__ == "__main__":
    main()
