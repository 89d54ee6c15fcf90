"""A build through an HTTP proxy when nothing else resolves names (issue 19, the proxy journey).

Debian's tinyproxy runs on loopback (a free port, its config and log in a folder of the test);
lxclayer runs in a mount namespace whose /etc/resolv.conf is empty, so neither lxclayer, nor the
host's apt, nor apt in the chroot can resolve deb.debian.org themselves: every index and every
.deb must come through the proxy (http_proxy from the caller's environment). The proxy is how
bytes travel, never what they are: it is in neither the lock nor the cache key.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .e2e_support import require_root, require_tools, unavailable

BASE = 'kind = "mmdebstrap"\nsuite = "bookworm"\nvariant = "minbase"\n'
TOOLS = 'kind = "apt"\nrequires = ["base"]\npackages = ["jq"]\n'
TEMPLATE = """\
name = "proxy-journey"
version = "1.0"
arch = "amd64"
formats = ["tar.zst"]
source_date_epoch = 1700000000
layers = ["base", "tools"]
"""


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def tinyproxy():
    """tinyproxy on 127.0.0.1:<free port>; yields (proxy URL, its log file); stopped afterwards."""
    require_root()
    require_tools("tinyproxy", "mmdebstrap", "unshare", "apt-get", "chroot")
    try:
        socket.create_connection(("deb.debian.org", 80), timeout=10).close()
    except OSError:
        unavailable("needs network access to deb.debian.org")
    d = Path(tempfile.mkdtemp(prefix="lxclayer-tinyproxy-", dir="/var/tmp"))
    d.chmod(0o755)  # tinyproxy drops to nobody and writes its log here
    log = d / "tinyproxy.log"
    log.touch(mode=0o666)
    log.chmod(0o666)
    port = _free_port()
    conf = d / "tinyproxy.conf"
    conf.write_text(f'User nobody\nGroup nogroup\nPort {port}\nListen 127.0.0.1\nTimeout 120\n'
                    f'LogFile "{log}"\nLogLevel Info\nMaxClients 50\nAllow 127.0.0.1\n'
                    'ConnectPort 443\nDisableViaHeader Yes\n')
    proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    unavailable(f"tinyproxy did not start: {proc.stderr.read().decode().strip()}")  # type: ignore[union-attr]
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def _lxclayer(tmp_path: Path, project: Path, *args: str, env: dict[str, str],
              no_dns: bool) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    full.update(env)
    full["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    argv = [sys.executable, "-m", "lxclayer", "--project", str(project), *args]
    if no_dns:
        empty = tmp_path / "empty-resolv.conf"
        empty.write_text("")
        argv = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"', "sh", str(empty), *argv]
    return subprocess.run(argv, env=full, text=True, capture_output=True, timeout=1200)


def test_a_build_that_resolves_and_downloads_goes_through_the_proxy(tinyproxy, tmp_path):
    proxy, log = tinyproxy
    project = tmp_path / "proj"
    for name, text in (("base", BASE), ("tools", TOOLS)):
        (project / "layers" / name).mkdir(parents=True)
        (project / "layers" / name / "layer.toml").write_text(text)
    (project / "templates").mkdir()
    (project / "templates/proxy-journey.toml").write_text(TEMPLATE)
    (project / "locks").mkdir()
    store = tmp_path / "store"
    env = {"LXCLAYER_STORE": str(store), "http_proxy": proxy, "https_proxy": proxy}

    r = _lxclayer(tmp_path, project, "build", "--out", str(tmp_path / "dist"), env=env, no_dns=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    seen = log.read_text()
    # the host's apt (the base's package set), apt in the chroot (the tools layer's) and the
    # downloads of the pinned .debs, all through the proxy
    assert seen.count("dists/bookworm/InRelease") >= 2, seen[-3000:]
    assert "/pool/main/j/jq/jq_" in seen and "/pool/main/d/dpkg/dpkg_" in seen
    lock = (project / "locks/proxy-journey.lock").read_text()
    assert 'jq = { version = "' in lock
    assert proxy.rsplit(":", 1)[1] not in lock and "proxy" not in lock.replace("proxy-journey", "")

    # Without the proxy (and with DNS): the same inputs, so every layer is cached.
    r = _lxclayer(tmp_path, project, "build", "--json", "--out", str(tmp_path / "dist"),
                  env={"LXCLAYER_STORE": str(store)}, no_dns=False)
    assert r.returncode == 0, r.stderr[-3000:]
    states = {layer["name"]: layer["state"] for layer in json.loads(r.stdout)["layers"]}
    assert states == {"base": "cached", "tools": "cached"}
