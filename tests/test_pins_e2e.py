"""End to end: a lock's life against a Debian archive on loopback that moves on.

A small project: a Debian 13 root (an import layer of an `mmdebstrap --variant=apt` tarball made
once per session) and an apt layer installing `lxtiny` from a signed archive served by a thread
on 127.0.0.1. Then, as Debian's mirror does: a fixed version appears in `stable-security`
(`outdated` names it, exit 1; `lock --upgrade --security-only` takes it; `lock diff` says
security); the pinned .deb disappears from the pool (a `--locked` build from an empty store
succeeds from a snapshot-layout server on another port, and separately from the registry's
artifacts, with the lock's archive sha256; and fails in one line when neither has it).

Needs root, mmdebstrap, gpg, dpkg-dev, docker-registry and (once, for the Debian root) network
access to deb.debian.org; $LXCLAYER_TEST_DEBIAN_TAR names a ready tarball instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lxclayer.artifacts import snapshot_timestamp
from lxclayer.lock import toml as locktoml

from .conftest import run_cli
from .debrepo_support import Archive, Server, signing_key
from .e2e_support import require_root, require_tools, unavailable
from .registry_support import PASSWORD, USER, registry_fixture

pytestmark = pytest.mark.e2e
registry = registry_fixture()

TEMPLATE = """\
name = "tiny"
version = "1.0"
arch = "amd64"
formats = ["tar.zst"]
source_date_epoch = 1700000000
layers = ["base", "tiny"]
"""


@pytest.fixture(scope="session")
def debian_tar(tmp_path_factory) -> Path:
    require_root()
    require_tools("mmdebstrap", "unshare", "gpg", "dpkg-deb", "dpkg-scanpackages", "apt-get")
    ready = os.environ.get("LXCLAYER_TEST_DEBIAN_TAR")
    if ready:
        return Path(ready)
    try:
        socket.create_connection(("deb.debian.org", 80), timeout=10).close()
    except OSError:
        unavailable("needs deb.debian.org once, for the Debian root below the apt layer")
    out = tmp_path_factory.mktemp("debian") / "trixie-apt.tar"
    subprocess.run(["mmdebstrap", "--quiet", "--variant=apt", "--mode=root", "--format=tar", "--skip=output/dev",
                    "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
                    "--dpkgopt=path-exclude=/usr/share/doc/*",
                    '--customize-hook=rm -f "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/*',
                    "trixie", str(out), "http://deb.debian.org/debian"], check=True, capture_output=True, timeout=900)
    return out


@pytest.fixture
def world(tmp_path, debian_tar):
    """The archive (signed), its server, and the project."""
    gnupg = tmp_path / "gnupg"
    key = signing_key(gnupg, tmp_path / "archive-key.gpg")
    arc = Archive(tmp_path / "www", gnupghome=gnupg)
    arc.add("debian", "stable", "lxtiny", "1.0-1")
    arc.index("debian", "stable-updates")
    arc.index("debian-security", "stable-security")
    srv = Server(tmp_path / "www")
    p = tmp_path / "project"
    (p / "templates").mkdir(parents=True)
    (p / "templates/tiny.toml").write_text(TEMPLATE)
    (p / "layers/base").mkdir(parents=True)
    try:
        os.link(debian_tar, p / "layers/base/debian.tar")
    except OSError:
        shutil.copyfile(debian_tar, p / "layers/base/debian.tar")
    sha = hashlib.sha256((p / "layers/base/debian.tar").read_bytes()).hexdigest()
    (p / "layers/base/layer.toml").write_text(f'kind = "import"\npath = "debian.tar"\nsha256 = "{sha}"\n')
    (p / "layers/tiny").mkdir()
    shutil.copyfile(key, p / "layers/tiny/archive-key.gpg")
    ksha = hashlib.sha256(key.read_bytes()).hexdigest()
    (p / "layers/tiny/layer.toml").write_text(f"""\
kind = "apt"
requires = ["base"]
packages = ["lxtiny"]

[[sources]]
uri = "{srv.url}/debian"
suite = "stable"
key = "archive-key.gpg"
key_sha256 = "{ksha}"

[[sources]]
uri = "{srv.url}/debian-security"
suite = "stable-security"
key = "archive-key.gpg"
key_sha256 = "{ksha}"
""")
    yield arc, srv, p
    srv.close()
    subprocess.run(["gpgconf", "--homedir", str(gnupg), "--kill", "all"], capture_output=True)


def _cli(p: Path, store: Path, *args: str, timeout: float = 900):
    return run_cli("--project", str(p), "--store", str(store), *args, timeout=timeout)


def _settings(p: Path, fallbacks: list[str]) -> None:
    (p / "lxclayer.toml").write_text(f"[artifacts]\nfallbacks = {json.dumps(fallbacks)}\n")


def test_a_lock_outlives_its_mirror(tmp_path, world, registry, monkeypatch):
    arc, srv, p = world
    r = _cli(p, tmp_path / "s0", "lock")
    assert r.returncode == 0, r.stderr
    lock0 = locktoml.read(p / "locks/tiny.lock")
    assert lock0.layers["tiny"].artifacts["packages"]["lxtiny"].version == "1.0-1"
    assert lock0.layers["tiny"].resolved_at  # when the pins were resolved
    assert lock0.layers["base"].resolved_at == ""  # a tarball beside layer.toml: nothing fetched
    r = _cli(p, tmp_path / "s0", "outdated", "--security")
    assert (r.returncode, r.stdout) == (0, ""), r.stderr

    # Debian publishes a security fix.
    arc.add("debian-security", "stable-security", "lxtiny", "1.0-1+deb1u1", pool="pool/updates/main")
    r = _cli(p, tmp_path / "s0", "outdated", "--security", "--json")
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["outdated"] == [{
        "template": "tiny", "source": "lxtiny-src", "packages": ["lxtiny"], "locked": "1.0-1",
        "available": "1.0-1+deb1u1", "pocket": "security", "layers": ["tiny"]}]
    shutil.copyfile(p / "locks/tiny.lock", tmp_path / "old.lock")
    # The scheduled rebuild (ci/scheduled-rebuild.sh --dry-run): outdated, lock --upgrade
    # --security-only and lock diff run for real; build, boot-test and push are printed.
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run(["sh", str(root / "ci/scheduled-rebuild.sh"), "--dry-run"], cwd=p, capture_output=True,
                       text=True, timeout=900, env=dict(
                           os.environ, LXCLAYER=f"{sys.executable} -m lxclayer", PYTHONPATH=str(root),
                           LXCLAYER_STORE=str(tmp_path / "s0"), LXCLAYER_PUSH="oci://registry.example/team"))
    assert r.returncode == 0, r.stderr
    assert "lxtiny-src 1.0-1 -> 1.0-1+deb1u1 (security): lxtiny; layers tiny; templates tiny" in r.stdout
    assert "| tiny | lxtiny-src 1.0-1 → 1.0-1+deb1u1 (security: lxtiny) |" in (p / "review/review.md").read_text()
    assert f"dry-run: would run: {sys.executable} -m lxclayer build --locked --all" in r.stdout
    assert f"dry-run: would run: {sys.executable} -m lxclayer boot-test --all" in r.stdout
    assert (f"dry-run: would run: {sys.executable} -m lxclayer push --template tiny "
            "oci://registry.example/team/tiny") in r.stdout
    lock = locktoml.read(p / "locks/tiny.lock")
    pin = lock.layers["tiny"].artifacts["packages"]["lxtiny"]
    deb = next((arc.root / "debian-security").rglob("lxtiny_1.0-1+deb1u1_all.deb"))
    assert (pin.version, pin.source, pin.sha256) == (
        "1.0-1+deb1u1", "pool/updates/main/l/lxtiny-src/lxtiny_1.0-1+deb1u1_all.deb",
        hashlib.sha256(deb.read_bytes()).hexdigest())
    r = _cli(p, tmp_path / "s0", "lock", "diff", str(tmp_path / "old.lock"), str(p / "locks/tiny.lock"))
    assert "tiny: lxtiny-src 1.0-1 → 1.0-1+deb1u1 (security: lxtiny)\n" in r.stdout
    r = _cli(p, tmp_path / "s0", "outdated", "--security")
    assert r.returncode == 0, r.stdout
    want_sha = lock.template.archives["tar.zst"].sha256

    # The mirror moves on: the pinned .deb leaves the pool. A snapshot-layout server keeps it.
    data = deb.read_bytes()
    deb.unlink()
    ts = snapshot_timestamp(lock.layers["tiny"].resolved_at)
    snap = Server(tmp_path / "snapshot")
    kept = tmp_path / "snapshot/archive/debian-security" / ts / pin.source
    kept.parent.mkdir(parents=True)
    kept.write_bytes(data)
    try:
        _settings(p, [snap.url + "/archive/debian-security/{timestamp}/{path}"])
        r = _cli(p, tmp_path / "s1", "build", "--locked", "--cache", "off", "--json")
        assert r.returncode == 0, r.stderr
        assert {a["format"]: a["sha256"] for a in json.loads(r.stdout)["archives"]} == {"tar.zst": want_sha}
        assert snap.paths == [f"/archive/debian-security/{ts}/{pin.source}"]
    finally:
        snap.close()

    # Separately: the registry's artifacts, pushed from the store that has the .deb.
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {registry.address: {"auth": base64.b64encode(
        f"{USER}:{PASSWORD}".encode()).decode()}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    ref = f"oci://{registry.address}/tiny/artifacts"
    r = _cli(p, tmp_path / "s1", "cache", "push", "--artifacts", "--cache", ref)
    assert r.returncode == 0, r.stderr
    assert "tiny: 1 artifact(s) in " in r.stdout
    assert registry.blob_file(f"sha256:{pin.sha256}").read_bytes() == data
    _settings(p, [ref])
    r = _cli(p, tmp_path / "s2", "build", "--locked", "--cache", "off", "--json")
    assert r.returncode == 0, r.stderr
    assert {a["format"]: a["sha256"] for a in json.loads(r.stdout)["archives"]} == {"tar.zst": want_sha}

    # Neither has it: one line, within a minute, naming the package, its version, every place.
    _settings(p, [])
    t = time.monotonic()
    r = _cli(p, tmp_path / "s3", "build", "--locked", "--cache", "off")
    assert r.returncode != 0
    assert time.monotonic() - t < 60
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("lxclayer: error:")]
    assert len(err) == 1, r.stderr
    assert "no place has package lxtiny 1.0-1+deb1u1 (all)" in err[0]
    for place in (f"{srv.url}/debian/{pin.source}: HTTP 404", f"{srv.url}/debian-security/{pin.source}: HTTP 404"):
        assert place in err[0]
    assert "Traceback" not in r.stderr
