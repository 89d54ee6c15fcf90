"""The store: damaged entries are found, killed builds leave nothing trusted, concurrent builds agree."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lxclayer.build import Mode, build
from lxclayer.definitions import load_project
from lxclayer.store import Store

from .conftest import run_cli, write_project

ARCHIVE = "test-tpl_1.0-1_amd64.tar.gz"


def do_build(project_dir: Path, store_dir: Path, **kw):
    return build(load_project(project_dir), Store(store_dir), **kw)


def blob_of(store_dir: Path, project_dir: Path, path: str) -> Path:
    store = Store(store_dir)
    project = load_project(project_dir)
    from lxclayer.lock import toml as locktoml

    lock = locktoml.read(project.lock_file)
    for layer in lock.layers.values():
        entry = store.lookup(layer.input)
        for e in entry.entries:
            if e.path == path and e.type == "file":
                return store.blob_path(e.hash)
    raise AssertionError(path)


def flip(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_blob_is_detected_and_rebuilt(project_dir, store_dir):
    first = do_build(project_dir, store_dir)
    good = (project_dir / "dist" / ARCHIVE).read_bytes()
    (project_dir / "dist" / ARCHIVE).unlink()
    flip(blob_of(store_dir, project_dir, "etc/motd"))
    for chunk in (store_dir / "chunks").rglob("*"):  # force compose to read the blobs again
        if chunk.is_file():
            chunk.unlink()
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "build")
    assert r.returncode == 0, r.stderr
    assert "does not match its hash" in r.stderr
    assert (project_dir / "dist" / ARCHIVE).read_bytes() == good
    assert first.archives[0].sha256


def test_damaged_manifest_is_detected_and_rebuilt(project_dir, store_dir):
    first = do_build(project_dir, store_dir)
    entry = store_dir / "layers" / first.layers[1].input / "manifest"
    os.chmod(entry, 0o644)
    data = bytearray(entry.read_bytes())
    data[-3] ^= 0x01
    entry.write_bytes(bytes(data))
    second = do_build(project_dir, store_dir)
    assert [p.state for p in second.layers] == ["cached", "built", "cached"]
    assert second.archives[0].sha256 == first.archives[0].sha256


def test_damaged_entry_under_locked_is_named_and_built_again_to_the_locks_output(project_dir, store_dir):
    first = do_build(project_dir, store_dir)
    entry_dir = store_dir / "layers" / first.layers[1].input
    meta = entry_dir / "meta.json"
    meta.write_text(meta.read_text().replace(first.layers[1].output, "0" * 32))
    (project_dir / "dist" / ARCHIVE).unlink()
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "build", "--locked")
    assert r.returncode == 0, r.stderr
    assert f"{entry_dir}: manifest or meta.json does not match the entry's seal: removed from the store;" \
           " building config again" in r.stderr
    assert "built    config" in r.stderr
    assert "Traceback" not in r.stderr
    assert Store(store_dir).lookup(first.layers[1].input).output == first.layers[1].output
    assert hashlib.sha256((project_dir / "dist" / ARCHIVE).read_bytes()).hexdigest() == first.archives[0].sha256


def _spawn_build(project: Path, store: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    return subprocess.Popen([sys.executable, "-m", "lxclayer", "--project", str(project), "--store", str(store),
                             "build", "--jobs", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_builds_killed_at_any_point_leave_nothing_trusted(tmp_path):
    project = write_project(tmp_path / "p", size_mb=24)
    reference = do_build(project, tmp_path / "ref")
    good = (project / "dist" / ARCHIVE).read_bytes()
    store = tmp_path / "store"
    t_full = reference.seconds
    for frac in (0.05, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9):
        (project / "dist" / ARCHIVE).unlink(missing_ok=True)
        p = _spawn_build(project, store)
        time.sleep(max(0.02, t_full * frac + 0.25))  # start-up, then a point inside the build
        p.send_signal(signal.SIGKILL)
        p.wait()
        # whatever the kill left, the store holds only whole entries
        for entry in (store / "layers").glob("*") if (store / "layers").exists() else []:
            assert Store(store).lookup(entry.name) is not None
    res = do_build(project, store)
    assert (project / "dist" / ARCHIVE).read_bytes() == good
    assert res.archives[0].sha256 == reference.archives[0].sha256
    assert not list((store / "tmp").iterdir())  # abandoned staging was cleaned up
    assert not list((project / "dist").glob(".*part"))


def test_two_builds_at_once_on_one_store_agree(tmp_path):
    a = write_project(tmp_path / "a", size_mb=8)
    b = write_project(tmp_path / "b", size_mb=8)
    store = tmp_path / "store"
    pa, pb = _spawn_build(a, store), _spawn_build(b, store)
    out_a, out_b = pa.communicate(timeout=300), pb.communicate(timeout=300)
    assert pa.returncode == 0, out_a[1]
    assert pb.returncode == 0, out_b[1]
    assert (a / "dist" / ARCHIVE).read_bytes() == (b / "dist" / ARCHIVE).read_bytes()
    assert len(list((store / "layers").iterdir())) == 3


def test_gc_removes_what_no_lock_names(project_dir, store_dir):
    do_build(project_dir, store_dir)
    conf = project_dir / "layers" / "config" / "root" / "etc" / "motd"
    conf.write_text("another motd\n")
    do_build(project_dir, store_dir)  # the lock now names the new config layer only
    assert len(list((store_dir / "layers").iterdir())) == 4
    dry = run_cli("--project", str(project_dir), "--store", str(store_dir), "gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would free" in dry.stdout and "1 layer entries" in dry.stdout
    assert len(list((store_dir / "layers").iterdir())) == 4
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "gc")
    assert r.returncode == 0
    assert "freed" in r.stdout
    assert len(list((store_dir / "layers").iterdir())) == 3
    # what the lock needs is all still there: a locked build needs no rebuild
    res = do_build(project_dir, store_dir, mode=Mode.LOCKED)
    assert [p.state for p in res.layers] == ["cached"] * 3


def test_gc_keeps_what_another_project_on_the_store_pins(tmp_path):
    # Project B builds into the store, then A changes a layer and collects: B's entries stay,
    # and B's locked offline build still needs nothing.
    a = write_project(tmp_path / "a")
    b = write_project(tmp_path / "b")
    (b / "layers" / "config" / "root" / "etc" / "motd").write_text("project b\n")
    store = tmp_path / "store"
    do_build(b, store)
    do_build(a, store)
    (a / "layers" / "config" / "root" / "etc" / "motd").write_text("a, edited\n")
    do_build(a, store)
    r = run_cli("--project", str(a), "--store", str(store), "gc")
    assert r.returncode == 0, r.stderr
    assert f"root {b / 'locks' / 'test-tpl.lock'}" in r.stdout
    assert "1 layer entries" in r.stdout  # a's old config layer only
    res = do_build(b, store, mode=Mode.LOCKED, offline=True)
    assert [p.state for p in res.layers] == ["cached"] * 3


def test_gc_removes_dead_roots_and_what_only_they_pinned(tmp_path):
    a = write_project(tmp_path / "a")
    b = write_project(tmp_path / "b")
    (b / "layers" / "config" / "root" / "etc" / "motd").write_text("project b\n")
    store = tmp_path / "store"
    do_build(a, store)
    do_build(b, store)
    shutil.rmtree(b)  # the checkout is gone: its root is dead
    dry = run_cli("--project", str(a), "--store", str(store), "gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove dead root {b / 'locks' / 'test-tpl.lock'}" in dry.stdout
    assert "would free layer entry" in dry.stdout and "(config, files," in dry.stdout
    assert len(list((store / "layers").iterdir())) == 4  # a dry run removes nothing
    r = run_cli("--project", str(a), "--store", str(store), "gc")
    assert r.returncode == 0, r.stderr
    assert len(list((store / "layers").iterdir())) == 3
    assert len(list((store / "roots").iterdir())) == 1


def test_gc_refuses_a_project_without_a_lockfile(tmp_path, project_dir, store_dir):
    do_build(project_dir, store_dir)
    r = run_cli("--project", str(tmp_path / "typo"), "--store", str(store_dir), "gc")
    assert r.returncode == 2, r.stdout
    assert "has no lockfile" in r.stderr and "Traceback" not in r.stderr
    assert len(list((store_dir / "layers").iterdir())) == 3  # nothing was freed


def test_gc_refuses_when_a_roots_lockfile_is_unreadable(tmp_path):
    a = write_project(tmp_path / "a")
    b = write_project(tmp_path / "b")
    store = tmp_path / "store"
    do_build(a, store)
    do_build(b, store)
    (b / "locks" / "test-tpl.lock").write_text("lock_version = \n")
    r = run_cli("--project", str(a), "--store", str(store), "gc")
    assert r.returncode == 2
    assert str(b / "locks" / "test-tpl.lock") in r.stderr and "Traceback" not in r.stderr
    assert len(list((store / "layers").iterdir())) == 3
