"""Building a small project end to end (files and import layers: no root, no network)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from lxclayer.build import Mode, build, plan
from lxclayer.definitions import load_project
from lxclayer.errors import LockError
from lxclayer.lock import toml as locktoml
from lxclayer.store import Store

from .conftest import SDE, run_cli

ARCHIVE = "test-tpl_1.0-1_amd64.tar.gz"


def do_build(project_dir: Path, store_dir: Path, **kw):
    return build(load_project(project_dir), Store(store_dir), **kw)


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tf:
        return {"./" + m.name.removeprefix("./") if m.name != "." else "./": m for m in tf.getmembers()}


def test_archive_holds_the_stacked_tree(project_dir, store_dir):
    res = do_build(project_dir, store_dir)
    archive = project_dir / "dist" / ARCHIVE
    assert res.archives[0].path == archive
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert res.archives[0].sha256 == sha
    assert (project_dir / "dist" / (ARCHIVE + ".sha256")).read_text() == f"{sha}  {ARCHIVE}\n"
    m = members(archive)
    names = subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert names[0] == "./"
    assert all(n.startswith("./") for n in names)
    assert len(names) == len(set(names))
    # parents come before their children
    seen: set[str] = {"./"}
    for n in names[1:]:
        parent = n.rstrip("/").rpartition("/")[0] + "/"
        assert parent in seen, n
        seen.add(n if n.endswith("/") else n + "/")
    # config layer: declared mode and an owner name resolved against the base's /etc/group
    conf = m["./etc/redis/redis.conf"]
    assert (conf.mode, conf.uid, conf.gid) == (0o640, 0, 101)
    # the implicit parent keeps the base layer's mode and group
    assert (m["./etc/redis"].mode, m["./etc/redis"].gid) == (0o2750, 101)
    assert m["./usr/local/bin/tool"].mode == 0o755
    assert m["./tmp"].mode == 0o1777
    # deletions of an upper layer remove the lower path; symlinks are declared
    assert "./etc/obsolete.conf" not in m
    link = m["./etc/systemd/system/multi-user.target.wants/redis.service"]
    assert link.issym() and link.linkname == "/lib/systemd/system/redis.service"
    # capabilities survive as a pax xattr; owners are numeric; mtimes clamped
    assert m["./usr/bin/ping"].pax_headers["SCHILY.xattr.security.capability"]
    assert all(x.uname == "" and x.gname == "" for x in m.values())
    assert all(x.mtime <= SDE for x in m.values())
    assert m["./etc/motd"].mtime == SDE
    assert m["./dev/null"].ischr()


def test_gzip_header_has_no_name_and_no_time(project_dir, store_dir):
    do_build(project_dir, store_dir)
    data = (project_dir / "dist" / ARCHIVE).read_bytes()
    assert data[:4] == b"\x1f\x8b\x08\x00"  # no FNAME flag
    assert data[4:8] == b"\0\0\0\0"  # mtime 0
    assert gzip.decompress(data)[:100].rstrip(b"\0") == b"./"


def test_two_stores_two_folders_umasks_and_time_zones_give_identical_bytes(tmp_path):
    from .conftest import write_project

    a = write_project(tmp_path / "a")
    b = write_project(tmp_path / "elsewhere" / "b")
    (tmp_path / "cwd1").mkdir()
    (tmp_path / "cwd2").mkdir()
    r1 = run_cli("--project", str(a), "--store", str(tmp_path / "s1"), "build", cwd=tmp_path / "cwd1",
                 env={"TZ": "UTC"}, umask=0o022)
    r2 = run_cli("--project", str(b), "--store", str(tmp_path / "s2"), "build", cwd=tmp_path / "cwd2",
                 env={"TZ": "Pacific/Kiritimati"}, umask=0o077)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    assert (a / "dist" / ARCHIVE).read_bytes() == (b / "dist" / ARCHIVE).read_bytes()
    assert (a / "locks" / "test-tpl.lock").read_bytes() == (b / "locks" / "test-tpl.lock").read_bytes()


def test_crlf_checkout_changes_nothing(tmp_path):
    from .conftest import write_project

    a = write_project(tmp_path / "a")
    b = write_project(tmp_path / "b")
    for f in (b / "layers" / "config" / "root").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes().replace(b"\n", b"\r\n"))
    ra = do_build(a, tmp_path / "s")
    rb = do_build(b, tmp_path / "s")
    assert [p.state for p in rb.layers] == ["cached", "cached", "cached"]
    assert ra.archives[0].sha256 == rb.archives[0].sha256


def test_edit_rebuilds_that_layer_only_and_plan_names_the_file(project_dir, store_dir):
    first = do_build(project_dir, store_dir)
    assert [p.state for p in first.layers] == ["built", "built", "built"]
    conf = project_dir / "layers" / "config" / "root" / "etc" / "redis" / "redis.conf"
    original = conf.read_text()
    conf.write_text(original + "maxmemory 1gb\n")
    project = load_project(project_dir)
    p = {x.name: x for x in plan(project, Store(store_dir), locktoml.read(project.lock_file))}
    assert p["base"].state == "cached" and p["extra"].state == "cached"
    assert p["config"].state == "build"
    assert "file root/etc/redis/redis.conf changed" in p["config"].reasons
    second = do_build(project_dir, store_dir)
    assert [x.state for x in second.layers] == ["cached", "built", "cached"]
    assert second.archives[0].sha256 != first.archives[0].sha256
    conf.write_text(original)
    third = do_build(project_dir, store_dir)
    assert [x.state for x in third.layers] == ["cached", "cached", "cached"]
    assert third.archives[0].sha256 == first.archives[0].sha256


def test_cli_plan_prints_reason(project_dir, store_dir):
    assert run_cli("--project", str(project_dir), "--store", str(store_dir), "build").returncode == 0
    (project_dir / "layers" / "extra" / "root" / "etc" / "extra.conf").write_text("extra = 2\n")
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "plan")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("cached") and "base" in lines[0]
    assert lines[2].startswith("build") and "file root/etc/extra.conf changed" in lines[2]


def test_locked_build_after_edit_fails_naming_layer_and_file(project_dir, store_dir):
    assert run_cli("--project", str(project_dir), "--store", str(store_dir), "build").returncode == 0
    lock_before = (project_dir / "locks" / "test-tpl.lock").read_bytes()
    archive_before = (project_dir / "dist" / ARCHIVE).read_bytes()
    (project_dir / "layers" / "config" / "root" / "etc" / "motd").write_text("changed\n")
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "build", "--locked")
    assert r.returncode == 2
    assert "layer config: file root/etc/motd changed" in r.stderr
    assert "Traceback" not in r.stderr
    assert (project_dir / "locks" / "test-tpl.lock").read_bytes() == lock_before
    assert (project_dir / "dist" / ARCHIVE).read_bytes() == archive_before


def test_locked_build_from_an_empty_store_reproduces_the_lock(project_dir, tmp_path):
    first = do_build(project_dir, tmp_path / "s1")
    shutil.rmtree(project_dir / "dist")
    again = do_build(project_dir, tmp_path / "s2", mode=Mode.LOCKED)
    assert again.archives[0].sha256 == first.archives[0].sha256
    assert not again.lock_written


def test_locked_without_lock_is_refused(project_dir, store_dir):
    with pytest.raises(LockError, match="no lockfile"):
        do_build(project_dir, store_dir, mode=Mode.LOCKED)


def test_noop_build_does_not_recompose(project_dir, store_dir):
    do_build(project_dir, store_dir)
    res = do_build(project_dir, store_dir)
    assert res.archives[0].composed is False
    # the archive is checked: an altered archive is written again
    archive = project_dir / "dist" / ARCHIVE
    good = archive.read_bytes()
    archive.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    res = do_build(project_dir, store_dir)
    assert res.archives[0].composed is True
    assert archive.read_bytes() == good


def test_files_layer_is_shared_whatever_is_below(tmp_path):
    """A files layer without owner names does not depend on the layers below it."""
    from .conftest import write_project

    a = write_project(tmp_path / "a")
    b = write_project(tmp_path / "b")
    # change the base of b: the extra layer (no names) keeps its input digest
    base = b / "layers" / "base"
    tar = base / "base.tar"
    data = tar.read_bytes()
    from .conftest import base_tarball

    new = base_tarball(size_mb=1)
    tar.write_bytes(new)
    lt = base / "layer.toml"
    lt.write_text(lt.read_text().replace(hashlib.sha256(data).hexdigest(), hashlib.sha256(new).hexdigest()))
    ra = do_build(a, tmp_path / "s")
    rb = do_build(b, tmp_path / "s")
    st = {p.name: p for p in rb.layers}
    assert st["base"].state == "built"
    assert st["extra"].state == "cached"
    assert {p.name: p.input for p in ra.layers}["extra"] == st["extra"].input


def test_zstd_output_on_request(project_dir, store_dir):
    import zstandard

    res = do_build(project_dir, store_dir, formats=["tar.zst"])
    path = project_dir / "dist" / "test-tpl_1.0-1_amd64.tar.zst"
    assert res.archives[0].path == path
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes()), read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        assert "./etc/redis/redis.conf" in tf.getnames()
    os.remove(path)
    again = do_build(project_dir, store_dir, formats=["tar.zst"])
    assert path.read_bytes() and again.archives[0].sha256 == res.archives[0].sha256


def test_noop_needs_no_hashing_when_projects_share_a_store(tmp_path, monkeypatch):
    """Two checkouts of one template share a store: each keeps its own archive's stat, so a
    no-op build in either reads nothing back."""
    from lxclayer.store import local as store_mod

    from .conftest import write_project

    a = write_project(tmp_path / "a")
    b = write_project(tmp_path / "b")
    s = tmp_path / "s"
    do_build(a, s)
    do_build(b, s)
    calls: list[Path] = []
    real = store_mod.sha256_file
    monkeypatch.setattr(store_mod, "sha256_file", lambda p: calls.append(p) or real(p))
    for project in (a, b, a):
        res = do_build(project, s)
        assert res.archives[0].composed is False
    assert calls == []
    # an archive copied back in place (new inode) is hashed once, then known by its stat again
    archive = a / "dist" / ARCHIVE
    data = archive.read_bytes()
    archive.unlink()
    archive.write_bytes(data)
    assert do_build(a, s).archives[0].composed is False
    assert do_build(a, s).archives[0].composed is False
    assert calls == [archive]


def test_building_another_format_adds_it_to_the_lock(project_dir, store_dir):
    from lxclayer.lock import toml as locktoml

    gz = do_build(project_dir, store_dir).archives[0]
    zst = do_build(project_dir, store_dir, formats=["tar.zst"]).archives[0]
    lock = locktoml.read(project_dir / "locks" / "test-tpl.lock")
    assert lock.template.archives["tar.gz"].sha256 == gz.sha256
    assert lock.template.archives["tar.zst"].sha256 == zst.sha256
    # a changed stack drops the archive that was not built again
    (project_dir / "layers" / "config" / "root" / "etc" / "motd").write_text("new\n")
    do_build(project_dir, store_dir, formats=["tar.zst"])
    lock = locktoml.read(project_dir / "locks" / "test-tpl.lock")
    assert list(lock.template.archives) == ["tar.zst"]


def test_plan_names_the_changed_layer_below_a_program_layer(project_dir, store_dir):
    # A script layer reads the tree below: after the base changes, plan must say so, and must
    # not claim that the template's architecture or SOURCE_DATE_EPOCH changed.
    from lxclayer.lock.model import LockedLayer

    build(load_project(project_dir), Store(store_dir))
    script = project_dir / "layers" / "late"
    script.mkdir()
    (script / "run.sh").write_text("echo hi > /etc/late\n")
    (script / "layer.toml").write_text('kind = "script"\nscript = "run.sh"\nrequires = ["base"]\n')
    tpl = project_dir / "layers" / "template.toml"
    tpl.write_text(tpl.read_text().replace('"extra"]', '"extra", "late"]'))
    from lxclayer.inputs import settings_digest
    from lxclayer.sources import scan_sources

    late_layer = load_project(project_dir).layer("late")
    lock = locktoml.read(project_dir / "locks" / "test-tpl.lock")
    # as a real build would have locked it: same settings and sources, made on the old base
    lock.layers["late"] = LockedLayer(
        kind="script", builder="script/1", settings=settings_digest(late_layer), input="1" * 32,
        output="2" * 32, parents=True,
        sources={p: s.lock_value() for p, s in scan_sources(late_layer.dir, project_dir).items()})
    locktoml.write(project_dir / "locks" / "test-tpl.lock", lock)
    base = project_dir / "layers" / "base"
    data = bytearray((base / "base.tar").read_bytes())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tf:
        names = tf.getnames()
    assert "./etc/obsolete.conf" in names
    i = data.index(b"old\n")
    data[i:i + 4] = b"new\n"
    (base / "base.tar").write_bytes(bytes(data))
    text = (base / "layer.toml").read_text()
    old_sha = text.split('sha256 = "')[1][:64]
    (base / "layer.toml").write_text(text.replace(old_sha, hashlib.sha256(bytes(data)).hexdigest()))
    project = load_project(project_dir)
    p = {x.name: x for x in plan(project, Store(store_dir), locktoml.read(project.lock_file))}
    assert p["base"].state == "build"
    late = " / ".join(p["late"].reasons)
    assert "layer below base" in late, late
    assert "architecture" not in late, late
