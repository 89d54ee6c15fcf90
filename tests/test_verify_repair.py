"""Damage in the store is named and healed (issue 19), through the CLI as a user meets it: a
blob flipped, truncated or deleted is named by `verify` with its layer, store entry and files;
`verify --repair` builds those layers again; a build that meets the damage (composing, or
realising a layer that reads the one below) evicts the entry and builds it again, under
`--locked` too, where the rebuilt output must be the lock's."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgspec
import pytest

from lxclayer.build import Mode, build
from lxclayer.definitions import load_project
from lxclayer.errors import LockError
from lxclayer.lock import toml as locktoml
from lxclayer.store import Store

from .conftest import run_cli

ARCHIVE = "test-tpl_1.0-1_amd64.tar.gz"


def cli(project: Path, store: Path, *args: str):
    r = run_cli("--project", str(project), "--store", str(store), *args)
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture
def built(project_dir: Path, store_dir: Path):
    # etc/motd.copy in `extra` has the bytes of `config`'s etc/motd: one blob, two layers
    (project_dir / "layers" / "extra" / "root" / "etc" / "motd.copy").write_text("hello\n")
    r = cli(project_dir, store_dir, "build")
    assert r.returncode == 0, r.stderr
    lock = locktoml.read(project_dir / "locks" / "test-tpl.lock")
    return project_dir, store_dir, lock


def blob_of(store: Path, lock, layer: str, path: str) -> str:
    entry = Store(store).lookup(lock.layers[layer].input)
    return next(e.hash for e in entry.entries if e.path == path and e.type == "file")


def damage(store: Path, h: str, how: str) -> None:
    path = Store(store).blob_path(h)
    os.chmod(path, 0o644)
    data = path.read_bytes()
    if how == "flip":
        path.write_bytes(data[:2] + bytes([data[2] ^ 0x01]) + data[3:])
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()


def archive_sha(project: Path) -> str:
    return hashlib.sha256((project / "dist" / ARCHIVE).read_bytes()).hexdigest()


REASON = {"flip": "does not match its hash", "truncate": "has 3 bytes, its manifest says 6", "delete": "is missing"}


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_verify_names_a_damaged_blob_repair_heals_it_and_build_locked_reproduces_the_lock(built, how):
    project, store, lock = built
    h = blob_of(store, lock, "config", "etc/motd")
    assert blob_of(store, lock, "extra", "etc/motd.copy") == h
    damage(store, h, how)

    # the chunk cache is intact: a --locked build needs no blob, and still gives the lock's bytes
    (project / "dist" / ARCHIVE).unlink()
    r = cli(project, store, "build", "--locked")
    assert r.returncode == 0, r.stderr
    assert archive_sha(project) == lock.template.archives["tar.gz"].sha256

    # ...and verify, which reads every blob, names the damage: one line per layer using the blob
    r = cli(project, store, "verify")
    assert r.returncode == 1, r.stdout + r.stderr
    cfg, ext = lock.layers["config"].input[:12], lock.layers["extra"].input[:12]
    assert r.stdout.splitlines() == [
        "base: ok",
        f"config: damaged: blob {h} {REASON[how]}; store entry {cfg}, file etc/motd",
        f"extra: damaged: blob {h} {REASON[how]}; store entry {ext}, file etc/motd.copy",
    ]
    assert "`lxclayer verify --repair`" in r.stderr

    r = cli(project, store, "verify", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"repaired config: built again, output {lock.layers['config'].output[:12]} (the lock's)" in r.stdout
    assert f"repaired extra: built again, output {lock.layers['extra'].output[:12]} (the lock's)" in r.stdout
    assert "repaired base" not in r.stdout

    r = cli(project, store, "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["base: ok", "config: ok", "extra: ok"]

    # the archive composed again from the blobs alone is the lock's
    for chunk in (store / "chunks").rglob("*"):
        if chunk.is_file():
            chunk.unlink()
    (project / "dist" / ARCHIVE).unlink()
    r = cli(project, store, "build", "--locked")
    assert r.returncode == 0, r.stderr
    assert archive_sha(project) == lock.template.archives["tar.gz"].sha256


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_build_locked_that_must_recompress_evicts_the_damaged_entry_and_reproduces_the_lock(built, how):
    project, store, lock = built
    h = blob_of(store, lock, "config", "etc/redis/redis.conf")
    damage(store, h, how)
    for chunk in (store / "chunks").rglob("*"):  # nothing to copy: compose reads the blobs
        if chunk.is_file():
            chunk.unlink()
    (project / "dist" / ARCHIVE).unlink()
    r = cli(project, store, "build", "--locked")
    assert r.returncode == 0, r.stderr
    assert f"blob {h}" in r.stderr and "removed from the store; building config again" in r.stderr
    assert "built    config" in r.stderr
    assert archive_sha(project) == lock.template.archives["tar.gz"].sha256
    assert (project / "locks" / "test-tpl.lock").read_bytes() == locktoml.dumps(lock).encode()
    r = cli(project, store, "verify")
    assert r.returncode == 0, r.stdout + r.stderr


def test_build_locked_that_meets_damage_below_while_realising_rebuilds_that_layer(built):
    """`config` resolves its group `redis` from base's /etc/group: a damaged blob there is met while
    realising config, and base is built again (from its tarball) under --locked."""
    project, store, lock = built
    h = blob_of(store, lock, "base", "etc/group")
    damage(store, h, "flip")
    r = cli(project, store, "build", "--locked")
    assert r.returncode == 0, r.stderr
    assert f"blob {h} does not match its hash: removed from the store; building base again" in r.stderr
    assert "built    base" in r.stderr
    assert archive_sha(project) == lock.template.archives["tar.gz"].sha256
    r = cli(project, store, "verify")
    assert r.returncode == 0, r.stdout + r.stderr


def test_verify_names_a_damaged_entry_and_repair_heals_it(built):
    project, store, lock = built
    meta = store / "layers" / lock.layers["extra"].input / "meta.json"
    meta.write_text(meta.read_text().replace('"files/', '"filez/', 1))
    r = cli(project, store, "verify", "extra")
    assert r.returncode == 1
    assert r.stdout.splitlines() == [f"extra: damaged: store entry {lock.layers['extra'].input[:12]}"
                                     " (manifest or meta.json does not match the entry's seal)"]
    r = cli(project, store, "verify", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "repaired extra: built again" in r.stdout
    assert cli(project, store, "verify").returncode == 0


def test_a_rebuild_that_is_not_the_locks_output_is_refused_naming_the_layer(built, monkeypatch):
    project, store, lock = built
    damage(store, blob_of(store, lock, "config", "etc/redis/redis.conf"), "flip")
    for chunk in (store / "chunks").rglob("*"):
        if chunk.is_file():
            chunk.unlink()
    (project / "dist" / ARCHIVE).unlink()
    # config's sources now build to other bytes (as a builder that is not reproducible would),
    # while its input digest, read from the file before, stays the lock's
    from lxclayer.builders import files

    real = files.realise

    def drifting(ctx):
        res = real(ctx)
        res.entries = [msgspec.structs.replace(e, hash=ctx.store.put_blob(b"drifted\n"), size=8)
                       if e.path == "etc/motd" else e for e in res.entries]
        return res

    monkeypatch.setattr(files, "realise", drifting)
    with pytest.raises(LockError, match="layer config built to output .*the lock records"):
        build(load_project(project), Store(store), mode=Mode.LOCKED)


def test_repair_that_could_not_give_the_locks_layers_is_refused_and_removes_nothing(built):
    project, store, lock = built
    h = blob_of(store, lock, "config", "etc/motd")
    damage(store, h, "flip")
    (project / "layers" / "config" / "root" / "etc" / "motd").write_text("edited since the lock\n")
    r = cli(project, store, "verify", "--repair")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the lock does not describe this build" in r.stderr
    assert "layer config: file root/etc/motd changed" in r.stderr
    assert f"config: damaged: blob {h} does not match its hash" in r.stdout  # named before refusing
    # nothing was removed: verify names the same damage, the entry is still there
    r = cli(project, store, "verify", "config")
    assert r.returncode == 1 and f"config: damaged: blob {h} does not match its hash" in r.stdout


def test_a_snapshot_is_never_made_from_a_damaged_blob_and_the_damage_names_what_to_evict(built):
    """Program layers run on snapshots of the layers below, made from the store: a damaged blob
    met while unpacking one raises the store's damage report (what the build's `_heal` evicts),
    and leaves no snapshot, whole or half made."""
    from lxclayer import snapshots
    from lxclayer.errors import StoreCorruption

    from .e2e_support import require_root

    require_root()  # owners and device nodes
    project, store_dir, lock = built
    store = Store(store_dir)
    entry = store.lookup(lock.layers["base"].input, layer="base")
    h = blob_of(store_dir, lock, "base", "etc/passwd")
    damage(store_dir, h, "truncate")
    with store.session(), pytest.raises(StoreCorruption) as err:
        snapshots.ensure(store, entry.input, entry.output, lambda: entry.entries, lambda p: None,
                         mtime=lock.template.source_date_epoch)
    assert err.value.entry == str(store.blob_path(h))
    assert err.value.reason == f"blob {h} does not match its hash"
    assert not snapshots.snapshot_dir(store, entry.input).exists()
    assert not [p for p in snapshots.snapshots_dir(store).iterdir() if p.name.startswith(".tmp-")]
    assert store.evict(err.value, [entry]) == [entry.input]
    assert store.lookup(entry.input) is None and not store.has_blob(h)
