"""Issue 15: concurrent builds, interrupted runs and a damaged store or dist/ never give a wrong
archive or lock; damage is named and healed by a build, under --locked too (issue 19)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lxclayer.build import Events, Mode, build
from lxclayer.definitions import load_project
from lxclayer.lock import toml as locktoml
from lxclayer.store import Store

from .conftest import run_cli, write_project

ARCHIVE = "test-tpl_1.0-1_amd64.tar.gz"


def do_build(project: Path, store: Path, **kw):
    return build(load_project(project), Store(store), **kw)


def spawn(project: Path, store: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    return subprocess.Popen([sys.executable, "-m", "lxclayer", "--project", str(project), "--store", str(store),
                             "build", "--jobs", "1", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def entry_dir(store: Path, project: Path, layer: str) -> Path:
    lock = locktoml.read(project / "locks" / "test-tpl.lock")
    return store / "layers" / lock.layers[layer].input


@pytest.fixture
def built(tmp_path):
    project = write_project(tmp_path / "p")
    store = tmp_path / "store"
    res = do_build(project, store)
    return project, store, res, (project / "dist" / ARCHIVE).read_bytes()


# --- concurrency ---------------------------------------------------------------------------------


def test_six_builds_at_once_on_a_fresh_store_never_fail(tmp_path):
    projects = [write_project(tmp_path / f"p{i}", size_mb=2) for i in range(6)]
    for rnd in range(6):
        store = tmp_path / f"store{rnd}"
        procs = [spawn(p, store) for p in projects]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, f"round {rnd}: {err}"
            assert "Traceback" not in err
        archives = {(p / "dist" / ARCHIVE).read_bytes() for p in projects}
        assert len(archives) == 1


def test_two_formats_built_at_once_are_both_in_the_lock(tmp_path):
    project = write_project(tmp_path / "p", size_mb=4)
    store = tmp_path / "store"
    a, b = spawn(project, store, "--format", "tar.gz"), spawn(project, store, "--format", "tar.zst")
    for p in (a, b):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    lock = locktoml.read(project / "locks" / "test-tpl.lock")
    assert sorted(lock.template.archives) == ["tar.gz", "tar.zst"]
    for fmt, arch in lock.template.archives.items():
        data = (project / "dist" / arch.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == arch.sha256, fmt


# --- interrupted runs ------------------------------------------------------------------------------


def test_ctrl_c_leaves_nothing_after_the_next_run(tmp_path):
    project = write_project(tmp_path / "p", size_mb=24)
    store = tmp_path / "store"
    for delay in (0.4, 0.8, 1.2, 1.6):
        p = spawn(project, store)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
        assert "Traceback" not in err
    (project / "locks" / ".test-tpl.lock.999999999.abcd.tmp").write_text("half")  # a kill mid-replace
    (project / "dist").mkdir(exist_ok=True)
    (project / "dist" / f".{ARCHIVE}.sha256.999999999.abcd.tmp").write_text("half")
    do_build(project, store)
    assert not list((store / "tmp").iterdir())
    assert not list((project / "locks").glob(".*"))
    assert not list((project / "dist").glob(".*"))


# --- a damaged store -------------------------------------------------------------------------------


def test_deleted_meta_json_is_named_and_healed(built):
    project, store, _, good = built
    d = entry_dir(store, project, "config")
    (d / "meta.json").unlink()
    # --locked too: named, removed, built again, and the output checked against the lock
    r = run_cli("--project", str(project), "--store", str(store), "build", "--locked")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("meta.json is missing") == 1 and "Traceback" not in r.stderr  # said once, while healing
    assert "building config again" in r.stderr
    r = run_cli("--project", str(project), "--store", str(store), "build", "--json")
    assert r.returncode == 0 and "meta.json" not in r.stderr
    assert [la["state"] for la in json.loads(r.stdout)["layers"]] == ["cached"] * 3
    assert (project / "dist" / ARCHIVE).read_bytes() == good


@pytest.mark.parametrize("field,old,new", [
    ("builder", '"files/', '"filez/'),
    ("settings", '"settings": "', '"settings": "0'),
])
def test_bit_flipped_in_meta_json_outside_the_manifest_is_found(built, field, old, new):
    project, store, _, good = built
    lock_before = (project / "locks" / "test-tpl.lock").read_text()
    meta = entry_dir(store, project, "config") / "meta.json"
    text = meta.read_text()
    assert old in text, field
    meta.write_text(text.replace(old, new, 1))
    warned: list[str] = []

    class Listen(Events):
        def warn(self, message: str) -> None:
            warned.append(message)

    res = do_build(project, store, mode=Mode.LOCKED, events=Listen())
    assert len(warned) == 1 and "does not match the entry's seal" in warned[0], warned
    assert [p.state for p in res.layers] == ["cached", "built", "cached"]
    assert [p.state for p in do_build(project, store).layers] == ["cached"] * 3
    assert (project / "locks" / "test-tpl.lock").read_text() == lock_before
    assert (project / "dist" / ARCHIVE).read_bytes() == good


def test_flipped_sha256_in_a_composed_record_is_not_trusted(built):
    project, store, res, good = built
    for rec in (store / "composed").glob("*.json"):
        data = bytearray(rec.read_bytes())
        i = data.index(res.archives[0].sha256.encode())
        data[i] = ord("0") if data[i] != ord("0") else ord("1")
        rec.write_bytes(bytes(data))
    do_build(project, store)
    lock = locktoml.read(project / "locks" / "test-tpl.lock")
    assert lock.template.archives["tar.gz"].sha256 == hashlib.sha256(good).hexdigest()
    assert (project / "dist" / ARCHIVE).read_bytes() == good


def test_flipped_bit_in_the_source_stat_cache_changes_nothing(tmp_path):
    project = write_project(tmp_path / "p")
    store = tmp_path / "store"
    time.sleep(2.1)  # sources changed in the last 2 s are never cached
    do_build(project, store)
    assert any((store / "statcache").glob("*"))
    lock_before = (project / "locks" / "test-tpl.lock").read_text()
    for cache in (store / "statcache").glob("*"):
        data = bytearray(cache.read_bytes())
        data[-3] ^= 0x01  # inside the last content hash
        cache.write_bytes(bytes(data))
    do_build(project, store)
    assert (project / "locks" / "test-tpl.lock").read_text() == lock_before


def test_damaged_format_file_is_one_line(built):
    project, store, _, _ = built
    (store / "FORMAT").write_bytes(b"\xff\xfe1\n")
    r = run_cli("--project", str(project), "--store", str(store), "build")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "store format" in r.stderr and "use another --store" in r.stderr


def test_swapped_chunks_are_not_used(tmp_path):
    project = write_project(tmp_path / "p", size_mb=24)
    store = tmp_path / "store"
    do_build(project, store)
    good = (project / "dist" / ARCHIVE).read_bytes()
    chunks = sorted(p for p in (store / "chunks").glob("*/*"))
    assert len(chunks) >= 2
    a, b = chunks[0], chunks[-1]
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    (project / "dist" / ARCHIVE).unlink()
    do_build(project, store)
    assert (project / "dist" / ARCHIVE).read_bytes() == good


def test_verify_finds_a_damaged_blob(built):
    project, store, _, _ = built
    lock = locktoml.read(project / "locks" / "test-tpl.lock")
    entry = Store(store).lookup(lock.layers["config"].input)
    motd = next(e for e in entry.entries if e.path == "etc/motd")
    blob = Store(store).blob_path(motd.hash)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"tampered\n")
    r = run_cli("--project", str(project), "--store", str(store), "verify")
    assert r.returncode == 1
    assert "config: damaged" in r.stdout and "etc/motd" in r.stdout
    assert "base: ok" in r.stdout


# --- dist/ -----------------------------------------------------------------------------------------


def test_archive_changed_with_its_mtime_kept_is_composed_again(built):
    project, store, _, good = built
    path = project / "dist" / ARCHIVE
    st = path.stat()
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    res = do_build(project, store)
    assert res.archives[0].composed
    assert path.read_bytes() == good


def test_a_wrong_sha256_file_is_corrected(built):
    project, store, _, good = built
    sha = project / "dist" / f"{ARCHIVE}.sha256"
    sha.write_text("0" * 64 + f"  {ARCHIVE}\n")
    do_build(project, store)
    assert sha.read_text() == f"{hashlib.sha256(good).hexdigest()}  {ARCHIVE}\n"


# --- the machine says no ---------------------------------------------------------------------------


def _one_line_error(r: subprocess.CompletedProcess, *parts: str) -> None:
    assert r.returncode in (1, 2), (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("lxclayer: error: ")]
    assert len(errors) == 1, r.stderr
    for part in parts:
        assert part in errors[0], r.stderr


def test_dist_being_a_file_is_one_line(project_dir, store_dir):
    (project_dir / "dist").write_text("not a folder\n")
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "build")
    _one_line_error(r, str(project_dir / "dist"))


def test_an_out_folder_that_cannot_be_made_is_one_line(project_dir, store_dir):
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "build", "--out", "/proc/no/such")
    _one_line_error(r, "/proc/no")


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small or read-only file system needs root")


@contextlib.contextmanager
def mounted(target: Path, *options: str):
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *options, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def incompressible(project: Path, mib: int = 3) -> Path:
    (project / "layers" / "config" / "root" / "etc" / "noise").write_bytes(os.urandom(mib << 20))
    return project


@needs_root
def test_a_full_disk_under_dist_is_one_line(tmp_path):
    project = incompressible(write_project(tmp_path / "p"))
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=1m", "tmpfs"):
        r = run_cli("--project", str(project), "--store", str(tmp_path / "store"), "build",
                    "--out", str(tmp_path / "small"))
        _one_line_error(r, str(tmp_path / "small"), "No space left on device")
        assert not [p for p in (tmp_path / "small").iterdir()]  # nothing half-written is left


@needs_root
def test_a_full_disk_under_the_store_is_one_line(tmp_path):
    project = incompressible(write_project(tmp_path / "p"))
    with mounted(tmp_path / "store", "-t", "tmpfs", "-o", "size=1m", "tmpfs"):
        r = run_cli("--project", str(project), "--store", str(tmp_path / "store"), "build")
        _one_line_error(r, "No space left on device")


@needs_root
def test_a_read_only_store_is_one_line(tmp_path):
    project = write_project(tmp_path / "p")
    store = tmp_path / "store"
    do_build(project, store)
    (project / "layers" / "config" / "root" / "etc" / "motd").write_text("edited\n")
    with mounted(store, "--bind", str(store)):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(store)], check=True)
        r = run_cli("--project", str(project), "--store", str(store), "build")
        _one_line_error(r, "Read-only file system")


@needs_root
def test_read_only_locks_is_one_line(tmp_path):
    project = write_project(tmp_path / "p")
    with mounted(project / "locks", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"):
        r = run_cli("--project", str(project), "--store", str(tmp_path / "store"), "build")
        _one_line_error(r, "Read-only file system", "locks")
