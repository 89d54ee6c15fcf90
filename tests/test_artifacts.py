"""Pins that outlive the mirror: [artifacts] fallbacks, tried at once when the source says 404
or cannot be reached; every byte checked against the lock's sha256; the registry's artifacts."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest

from lxclayer.artifacts import artifacts_tag, candidates, push_artifacts
from lxclayer.debian import fetch
from lxclayer.errors import BuildError
from lxclayer.lock.model import LOCK_VERSION, Artifact, LockedLayer, LockedTemplate, Lockfile
from lxclayer.settings import check_fallback
from lxclayer.store import Store

from .conftest import run_cli, write_project
from .debrepo_support import Server, make_deb
from .registry_support import PASSWORD, USER, free_port, registry_fixture

registry = registry_fixture()
RESOLVED_AT = "2023-11-14T22:13:20Z"
TS = "20231114T221320Z"


def _deb(tmp_path, version="1.0-1"):
    deb = make_deb(tmp_path / "debs" / f"lxtiny_{version}_all.deb", "lxtiny", version)
    data = deb.read_bytes()
    a = Artifact(name="lxtiny", version=version, arch="all", sha256=hashlib.sha256(data).hexdigest(),
                 source=f"pool/main/l/lxtiny/lxtiny_{version}_all.deb", size=len(data))
    return a, data


def _store(tmp_path, name="store") -> Store:
    s = Store(tmp_path / name)
    s._init()
    return s


def test_fallback_templates_render_every_placeholder():
    a = Artifact(name="libssl3t64", version="3.5.9-1~deb13u1", arch="amd64", sha256="ab" * 32,
                 source="pool/main/o/openssl/libssl3t64_3.5.9-1~deb13u1_amd64.deb")
    got = candidates(a, ["http://deb.debian.org/debian/pool/main/o/openssl/libssl3t64_3.5.9-1~deb13u1_amd64.deb"], [
        "https://snapshot.debian.org/archive/debian/{timestamp}/{path}",
        "http://mirror.example/by-sha256/{sha256}",
        "http://mirror.example/flat/{name}?from={url}",
        "oci://127.0.0.1:5000/team/artifacts",
    ], resolved_at=RESOLVED_AT)
    assert got == [
        "http://deb.debian.org/debian/pool/main/o/openssl/libssl3t64_3.5.9-1~deb13u1_amd64.deb",
        f"https://snapshot.debian.org/archive/debian/{TS}/pool/main/o/openssl/libssl3t64_3.5.9-1~deb13u1_amd64.deb",
        f"http://mirror.example/by-sha256/{'ab' * 32}",
        "http://mirror.example/flat/libssl3t64_3.5.9-1~deb13u1_amd64.deb?from="
        "http://deb.debian.org/debian/pool/main/o/openssl/libssl3t64_3.5.9-1~deb13u1_amd64.deb",
        f"oci://127.0.0.1:5000/team/artifacts@sha256:{'ab' * 32}",
    ]
    # a lock from before resolved_at: the snapshot fallback cannot be placed, the others can
    assert len(candidates(a, [], ["https://snapshot.debian.org/archive/debian/{timestamp}/{path}",
                                  "http://m/{sha256}"], resolved_at="")) == 1


@pytest.mark.parametrize("bad, reason", [
    ("http://m/{sha}", "unknown placeholder {sha}"),
    ("http://m/all.deb", "names no {sha256}"),
    ("ftp://m/{sha256}", "neither an http(s)://"),
    ("http://m/{path", "not a valid template"),
])
def test_bad_fallbacks_are_refused_naming_file_and_key(tmp_path, bad, reason):
    assert reason in (check_fallback(bad) or "")
    write_project(tmp_path)
    (tmp_path / "lxclayer.toml").write_text(f'[artifacts]\nfallbacks = ["http://ok/{{sha256}}", {json.dumps(bad)}]\n')
    r = run_cli("--project", str(tmp_path), "outdated")
    assert r.returncode == 2
    assert r.stderr.startswith("lxclayer: error: lxclayer.toml: key artifacts.fallbacks[1]: ")
    assert reason in r.stderr and "Traceback" not in r.stderr


def test_a_pin_gone_from_its_mirror_comes_from_a_snapshot_layout_fallback(tmp_path):
    a, data = _deb(tmp_path)
    mirror = Server(tmp_path / "mirror")  # has nothing: the pool moved on
    snap = Server(tmp_path / "snapshot")
    (tmp_path / "snapshot/archive/debian" / TS / "pool/main/l/lxtiny").mkdir(parents=True)
    (tmp_path / "snapshot/archive/debian" / TS / a.source).write_bytes(data)
    dead = f"http://127.0.0.1:{free_port()}"  # nobody listens: cannot be reached at all
    try:
        store = _store(tmp_path)
        urls = candidates(a, fetch.deb_urls(a, [dead + "/debian", mirror.url + "/debian"]),
                          [snap.url + "/archive/debian/{timestamp}/{path}"], resolved_at=RESOLVED_AT)
        t = time.monotonic()
        got = fetch.fetch_all(store, [(a, "lxtiny 1.0-1 (all)", urls)], tmp_path / "dl", offline=False,
                              log=print, file=None, key=None)
        assert time.monotonic() - t < 30
        assert hashlib.sha256(got[a.sha256].read_bytes()).hexdigest() == a.sha256
        assert snap.paths == [f"/archive/debian/{TS}/{a.source}"]
        assert mirror.paths == [f"/debian/{a.source}"]
        # a fallback serving other bytes is refused by the lock's sha256
        other, _ = _deb(tmp_path, "2.0-1")
        fake = Artifact(name="lxtiny", version="2.0-1", arch="all", sha256=other.sha256, source=a.source)
        with pytest.raises(BuildError, match=f"sha256 is {a.sha256}, expected {other.sha256}"):
            fetch.fetch_all(_store(tmp_path, "s2"), [(fake, "lxtiny 2.0-1 (all)", candidates(
                fake, [], [snap.url + "/archive/debian/{timestamp}/{path}"], resolved_at=RESOLVED_AT))],
                tmp_path / "dl2", offline=False, log=print, file=None, key=None)
    finally:
        mirror.close()
        snap.close()


def _lock(a: Artifact) -> Lockfile:
    return Lockfile(lock_version=LOCK_VERSION, template=LockedTemplate(
        name="tiny", version="1", release=1, arch="amd64", source_date_epoch=1, definition="0"),
        layers={"apt": LockedLayer(kind="apt", builder="apt/1", settings="s", input="i", output="o",
                                   artifacts={"packages": {a.name: a}}, resolved_at=RESOLVED_AT)})


def test_registry_artifacts_serve_a_pin_and_nothing_having_it_is_one_line(tmp_path, registry, monkeypatch):
    from lxclayer.registry import client_for

    auth = tmp_path / "auth.json"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth.write_text(json.dumps({"auths": {registry.address: {"auth": token}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    a, data = _deb(tmp_path)
    ref = f"oci://{registry.address}/team/artifacts"
    # what `lxclayer cache push --artifacts` uploads: the .deb as the blob named by its sha256
    src = _store(tmp_path, "src")
    (tmp_path / "x.deb").write_bytes(data)
    src.put_artifact_file(tmp_path / "x.deb", a.sha256, name="x")
    lock = _lock(a)
    with client_for(ref) as c:
        rep = push_artifacts(c, lock, src)
        _, _, manifest = c.get_manifest(artifacts_tag(lock))
    assert (rep.artifacts, rep.missing) == (1, [])
    assert registry.blob_file(f"sha256:{a.sha256}").read_bytes() == data
    assert json.loads(manifest)["layers"][0]["digest"] == f"sha256:{a.sha256}"

    mirror = Server(tmp_path / "mirror")
    try:
        urls = candidates(a, fetch.deb_urls(a, [mirror.url + "/debian"]), [ref], resolved_at=RESOLVED_AT)
        got = fetch.fetch_all(_store(tmp_path, "empty"), [(a, "lxtiny 1.0-1 (all)", urls)], tmp_path / "dl",
                              offline=False, log=print, file=None, key=None)
        assert got[a.sha256].read_bytes() == data
        # a pin that neither the mirror nor the registry has: one line, every place tried
        b, _ = _deb(tmp_path, "1.0-2")
        urls = candidates(b, fetch.deb_urls(b, [mirror.url + "/debian"]), [ref, mirror.url + "/by-sha256/{sha256}"],
                          resolved_at=RESOLVED_AT)
        t = time.monotonic()
        with pytest.raises(BuildError) as e:
            fetch.fetch_all(_store(tmp_path, "empty2"), [(b, "lxtiny 1.0-2 (all)", urls)], tmp_path / "dl2",
                            offline=False, log=print, file="layers/apt/layer.toml", key="packages")
        assert time.monotonic() - t < 30
        msg = e.value.message()
        assert "\n" not in msg
        assert msg.startswith("layers/apt/layer.toml: key packages: no place has package lxtiny 1.0-2 (all)")
        for place in (f"{mirror.url}/debian/{b.source}: HTTP 404", f"{ref}@sha256:{b.sha256}: not in the registry",
                      f"{mirror.url}/by-sha256/{b.sha256}: HTTP 404"):
            assert place in msg
        assert PASSWORD not in msg
    finally:
        mirror.close()


def test_an_imported_debian_root_keeps_relative_symlinks_that_climb(tmp_path):
    """Debian's etc/os-release -> ../usr/lib/os-release (every mmdebstrap tarball has it) was
    refused as 'leaves the root' (found by tests/test_pins_e2e.py); a member *named* with .. still is."""
    import io
    import tarfile


    def tarball(link_name: str) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for d in ("./", "./etc", "./usr", "./usr/lib"):
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            for f, data in (("./usr/lib/os-release", b"x=1"), ("./etc/group", b"root:x:0:\nredis:x:101:\n")):
                ti = tarfile.TarInfo(f)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            ti = tarfile.TarInfo(link_name)
            ti.type, ti.linkname = tarfile.SYMTYPE, "../usr/lib/os-release"
            tf.addfile(ti)
        return buf.getvalue()

    write_project(tmp_path)
    for name, ok in (("./etc/os-release", True), ("./etc/../../escape", False)):
        tar = tarball(name)
        (tmp_path / "layers/base/base.tar").write_bytes(tar)
        lt = (tmp_path / "layers/base/layer.toml").read_text().splitlines()
        (tmp_path / "layers/base/layer.toml").write_text("\n".join(
            f'sha256 = "{hashlib.sha256(tar).hexdigest()}"' if ln.startswith("sha256") else ln for ln in lt) + "\n")
        r = run_cli("--project", str(tmp_path), "--store", str(tmp_path / "store"), "build", "--format", "tar.zst")
        if ok:
            assert r.returncode == 0, r.stderr
        else:
            assert r.returncode == 2 and "leaves the root ('..')" in r.stderr
