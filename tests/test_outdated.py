"""`lxclayer outdated`, `lock --upgrade --security-only` pins and `lock diff` by source package,
against a Debian archive served on loopback that moves on (a new version in -security)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lxclayer.debian.version import compare
from lxclayer.definitions import load_project
from lxclayer.lock import toml as locktoml
from lxclayer.lock.diff import diff, render
from lxclayer.lock.model import LOCK_VERSION, Artifact, LockedLayer, LockedTemplate, Lockfile

from .conftest import run_cli
from .debrepo_support import Archive, Server
from .e2e_support import require_tools

PAIRS = ["1.0 1.0", "1.0 1.0-1", "1.0~rc1 1.0", "1:0.9 2.0", "3.5.9-1~deb13u1 3.5.10-1~deb13u1",
         "1.2.13.dfsg-1 1.2.13.dfsg-1+deb12u1", "2.36-9+deb12u13 2.36-9+deb12u9", "1.0+b1 1.0",
         "1.0a 1.0+", "1.0~~ 1.0~", "0:1.0 1.0", "5.2.37-2+b10 5.2.37-2+b9", "1.0.0 1.0", "a b"]


@pytest.mark.parametrize("pair", PAIRS)
def test_debian_versions_compare_as_dpkg_does(pair):
    require_tools("dpkg")
    a, b = pair.split()
    want = 0
    for op, r in (("lt", -1), ("gt", 1)):
        if subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0:
            want = r
    assert compare(a, b) == want
    assert compare(b, a) == -want


# --- a project whose base layer pins .debs of a local archive ------------------------------------

TEMPLATE = """\
name = "tiny"
version = "1.0"
arch = "amd64"
formats = ["tar.gz"]
source_date_epoch = 1700000000
layers = ["base"]
"""


@pytest.fixture
def archive(tmp_path):
    arc = Archive(tmp_path / "www")
    arc.add("debian", "stable", "lxtiny", "1.0-1")
    arc.add("debian", "stable", "lxother", "2.0-1")
    arc.index("debian", "stable-updates")
    arc.index("debian-security", "stable-security")
    srv = Server(tmp_path / "www")
    yield arc, srv
    srv.close()


def _project(root: Path, url: str) -> Path:
    (root / "layers/base").mkdir(parents=True)
    (root / "templates").mkdir()
    (root / "templates/tiny.toml").write_text(TEMPLATE)
    # The release suite only: its -updates and -security companions are derived (.../debian-security).
    (root / "layers/base/layer.toml").write_text(
        f'kind = "mmdebstrap"\nsuite = "stable"\nvariant = "minbase"\n'
        f'mirrors = ["deb [trusted=yes] {url}/debian stable main"]\npackages = ["lxtiny"]\n')
    return root


def _lock_for(project: Path, www: Path, names: dict[str, str]) -> Lockfile:
    """The lock `lxclayer lock` writes for these pins (made here: building a Debian root is the
    e2e test's business)."""
    import hashlib

    pins = {}
    for name, version in names.items():
        deb = next((www / "debian/pool/main").rglob(f"{name}_{version}_all.deb"))
        data = deb.read_bytes()
        pins[name] = Artifact(name=name, version=version, arch="all", sha256=hashlib.sha256(data).hexdigest(),
                              source=str(deb.relative_to(www / "debian")), size=len(data))
    lock = Lockfile(lock_version=LOCK_VERSION, template=LockedTemplate(
        name="tiny", version="1.0", release=1, arch="amd64", source_date_epoch=1700000000, definition="0" * 32),
        layers={"base": LockedLayer(kind="mmdebstrap", builder="mmdebstrap/1", settings="1" * 32, input="2" * 32,
                                    output="3" * 32, artifacts={"packages": pins},
                                    resolved_at="2023-11-14T22:13:20Z")})
    locktoml.write(project / "locks/tiny.lock", lock)
    return lock


def test_outdated_names_a_security_update_by_source_package(tmp_path, archive):
    require_tools("apt-get")
    arc, srv = archive
    project = _project(tmp_path / "p", srv.url)
    _lock_for(project, arc.root, {"lxtiny": "1.0-1", "lxother": "2.0-1"})
    store = str(tmp_path / "store")

    r = run_cli("--project", str(project), "--store", store, "outdated")
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    assert "nothing outdated" in r.stderr

    # The archive moves on: a security fix of lxtiny, and a point-release update of lxother.
    arc.add("debian-security", "stable-security", "lxtiny", "1.0-1+deb1u1", pool="pool/updates/main")
    arc.add("debian", "stable", "lxother", "2.0-2")
    r = run_cli("--project", str(project), "--store", store, "outdated")
    assert r.returncode == 1, r.stderr
    assert r.stdout.splitlines() == [
        "lxother-src 2.0-1 -> 2.0-2 (release): lxother; layers base; templates tiny",
        "lxtiny-src 1.0-1 -> 1.0-1+deb1u1 (security): lxtiny; layers base; templates tiny",
    ]
    r = run_cli("--project", str(project), "--store", store, "outdated", "--security", "--json")
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout) == {"outdated": [{
        "template": "tiny", "source": "lxtiny-src", "packages": ["lxtiny"], "locked": "1.0-1",
        "available": "1.0-1+deb1u1", "pocket": "security", "layers": ["base"]}]}
    # the -security suite was derived from the release suite's line, at .../debian-security
    assert any(p.startswith("/debian-security/dists/stable-security/") for p in srv.paths)


def test_outdated_security_gate_is_0_without_a_security_update_and_refuses_offline(tmp_path, archive):
    require_tools("apt-get")
    arc, srv = archive
    project = _project(tmp_path / "p", srv.url)
    _lock_for(project, arc.root, {"lxtiny": "1.0-1"})
    arc.add("debian", "stable", "lxtiny", "1.1-1")  # newer, but not a security update
    r = run_cli("--project", str(project), "outdated", "--security", "--json")
    assert (r.returncode, json.loads(r.stdout)) == (0, {"outdated": []}), r.stderr
    r = run_cli("--project", str(project), "outdated", "--offline")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "lxclayer: error: outdated reads the sources' current indices; it cannot run with --offline"]
    r = run_cli("--project", str(project), "outdated", "--template", "nope")
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr


def test_outdated_with_an_unreachable_source_exits_2_in_one_line(tmp_path, archive):
    require_tools("apt-get")
    arc, srv = archive
    project = _project(tmp_path / "p", srv.url)
    _lock_for(project, arc.root, {"lxtiny": "1.0-1"})
    srv.close()
    r = run_cli("--project", str(project), "outdated", timeout=120)
    assert r.returncode == 2, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lxclayer: error: ") and "127.0.0.1" in lines[0]


def test_security_pins_move_only_security_updates_and_lock_diff_reads_like_an_advisory(tmp_path, archive):
    require_tools("apt-get")
    from lxclayer.upgrade import security_pins

    arc, srv = archive
    project = _project(tmp_path / "p", srv.url)
    old = _lock_for(project, arc.root, {"lxtiny": "1.0-1", "lxother": "2.0-1"})
    arc.add("debian-security", "stable-security", "lxtiny", "1.0-1+deb1u1", pool="pool/updates/main")
    arc.add("debian", "stable", "lxother", "2.0-2")  # not a security update: stays
    new, changes = security_pins(load_project(root=project), old)
    pins = new.layers["base"].artifacts["packages"]
    deb = next((arc.root / "debian-security").rglob("lxtiny_1.0-1+deb1u1_all.deb"))
    import hashlib

    assert pins["lxtiny"] == Artifact(name="lxtiny", version="1.0-1+deb1u1", arch="all",
                                      sha256=hashlib.sha256(deb.read_bytes()).hexdigest(),
                                      source="pool/updates/main/l/lxtiny-src/lxtiny_1.0-1+deb1u1_all.deb",
                                      size=deb.stat().st_size)
    assert pins["lxother"] == old.layers["base"].artifacts["packages"]["lxother"]
    assert [(la, a.version, b.version) for la, a, b in changes] == [("base", "1.0-1", "1.0-1+deb1u1")]
    assert render(diff(old, new), "text") == "base: lxtiny-src 1.0-1 → 1.0-1+deb1u1 (security: lxtiny)\n"


def test_lock_diff_groups_binaries_of_one_source_package():
    def art(name, version, pool="pool/main"):
        return Artifact(name=name, version=version, arch="amd64", sha256=version[-1] * 64,
                        source=f"{pool}/o/openssl/{name}_{version}_amd64.deb")

    def lock(pins):
        return Lockfile(lock_version=LOCK_VERSION, template=LockedTemplate(
            name="t", version="1", release=1, arch="amd64", source_date_epoch=1, definition="0"),
            layers={"base-os": LockedLayer(kind="mmdebstrap", builder="b", settings="s", input="i", output="o",
                                           artifacts={"packages": pins})})

    names = ["libssl3t64", "openssl", "openssl-provider-legacy"]
    old = lock({n: art(n, "3.5.9-1~deb13u1") for n in names} | {"curl": Artifact(
        name="curl", version="8.1-1", arch="amd64", sha256="c" * 64, source="pool/main/c/curl/curl_8.1-1_amd64.deb")})
    new = lock({n: art(n, "3.5.10-1~deb13u1", "pool/updates/main") for n in names} | {"curl": Artifact(
        name="curl", version="8.1-2", arch="amd64", sha256="d" * 64, source="pool/main/c/curl/curl_8.1-2_amd64.deb")})
    assert render(diff(old, new), "text") == (
        "base-os: curl 8.1-1 → 8.1-2\n"
        "base-os: openssl 3.5.9-1~deb13u1 → 3.5.10-1~deb13u1 (security: libssl3t64, openssl, "
        "openssl-provider-legacy)\n")


def test_resolved_at_is_optional_and_written_only_when_known(tmp_path):
    lock = Lockfile(lock_version=LOCK_VERSION, template=LockedTemplate(
        name="t", version="1", release=1, arch="amd64", source_date_epoch=1, definition="0"),
        layers={"a": LockedLayer(kind="apt", builder="apt/1", settings="s", input="i", output="o")})
    text = locktoml.dumps(lock)
    assert "resolved_at" not in text  # a lock from before it was recorded reads and writes the same
    assert locktoml.dumps(locktoml.loads(text, file="x")) == text
    lock.layers["a"].resolved_at = "2026-12-06T11:20:31Z"
    text = locktoml.dumps(lock)
    assert 'resolved_at = "2026-12-06T11:20:31Z"\n' in text
    assert locktoml.loads(text, file="x").layers["a"].resolved_at == "2026-12-06T11:20:31Z"
    # it changes no digest derived from the lock (an OCI image's label, output cache keys)
    bare = locktoml.loads(text.replace('resolved_at = "2026-12-06T11:20:31Z"\n', ""), file="x")
    assert locktoml.stack_digest(bare) == locktoml.stack_digest(lock)


def test_the_repository_locks_are_read_unchanged():
    root = Path(__file__).resolve().parent.parent
    for f in sorted((root / "locks").glob("*.lock")):
        assert locktoml.dumps(locktoml.read(f)) == f.read_text()


def test_lock_upgrade_options_refuse_bad_input_before_anything_runs(tmp_path):
    from lxclayer.upgrade import without_layers

    from .conftest import write_project

    project = write_project(tmp_path / "p")
    store = tmp_path / "store"
    r = run_cli("--project", str(project), "--store", str(store), "lock", "--upgrade", "--layer", "nope")
    assert r.returncode == 2
    assert r.stderr == ("lxclayer: error: --layer nope: template test-tpl has no such layer "
                        "(its layers: base, config, extra)\n")
    r = run_cli("--project", str(project), "--store", str(store), "lock", "--security-only")
    assert r.returncode == 2 and "--layer and --security-only go with --upgrade" in r.stderr
    assert not store.exists()  # nothing ran
    lock = Lockfile(lock_version=LOCK_VERSION, template=LockedTemplate(
        name="t", version="1", release=1, arch="amd64", source_date_epoch=1, definition="0"),
        layers={n: LockedLayer(kind="files", builder="files/1", settings="s", input="i", output="o")
                for n in ("base", "config", "extra")})
    assert list(without_layers(lock, ["config"]).layers) == ["base", "extra"]
