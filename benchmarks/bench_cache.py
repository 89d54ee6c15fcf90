#!/usr/bin/env python3
"""Shared cache benchmark: a cold build of the template on an empty store, with a warm cache on
loopback, against a cold build without the cache, both measured in the same run.

    python benchmarks/bench_cache.py                 # needs root, docker-registry and network
    python benchmarks/bench_cache.py --no-baseline   # only the cached build (quick check)

Steps (whole commands, each in a fresh process, `build --locked` of the repository's template):
1. start Debian's docker-registry on 127.0.0.1 with an empty storage;
2. warm the cache: `lxclayer cache push` from a store that holds the template (LXCLAYER_STORE,
   or ~/.cache/lxclayer/store; built first if it does not);
3. cached: `build --locked --cache oci://127.0.0.1:PORT/bench/cache` into an empty store;
4. baseline: `build --locked` into another empty store, no cache (downloads from Debian's
   archive and PyPI, every layer built).
Both must give the lock's archive sha256 (build --locked checks it). Prints both times and the
ratio. Goals (issue 13): cached at most 20 s, at least 10 times faster than the baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'storage'}}}}}\n"
        f'http: {{addr: "127.0.0.1:{port}", secret: bench}}\n')
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return proc, f"127.0.0.1:{port}"
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    proc.kill()
    sys.exit("docker-registry did not start")


def lxclayer(store: Path, *args: str, out: Path | None = None) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO), LXCLAYER_STORE=str(store))
    env.pop("LXCLAYER_CACHE", None)
    cmd = [sys.executable, "-m", "lxclayer", "--project", str(REPO), *args]
    if out is not None:
        cmd += ["--out", str(out)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-baseline", action="store_true", help="skip the cold build without the cache")
    args = ap.parse_args()
    if shutil.which("docker-registry") is None:
        sys.exit("needs Debian's docker-registry (apt install docker-registry)")
    warm = Path(os.environ.get("LXCLAYER_STORE") or Path.home() / ".cache/lxclayer/store")
    with tempfile.TemporaryDirectory(prefix="lxclayer-bench-cache.", dir="/var/tmp") as tmp:
        tmpd = Path(tmp)
        proc, address = start_registry(tmpd)
        try:
            ref = f"oci://{address}/bench/cache"
            lxclayer(warm, "build", "--locked", out=tmpd / "warm-dist")  # a no-op when the store is warm
            push = lxclayer(warm, "cache", "push", "--cache", ref)
            cached = lxclayer(tmpd / "store-cached", "build", "--locked", "--cache", ref, out=tmpd / "d1")
            print(f"cache push from a warm store:                {push:7.1f} s")
            print(f"cold build, empty store, warm cache:         {cached:7.1f} s   (goal <= 20 s)")
            if not args.no_baseline:
                base = lxclayer(tmpd / "store-cold", "build", "--locked", out=tmpd / "d2")
                print(f"cold build, empty store, no cache:           {base:7.1f} s")
                print(f"ratio no-cache / cache:                      {base / cached:7.1f} x  (goal >= 10 x)")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
