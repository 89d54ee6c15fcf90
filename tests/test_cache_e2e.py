"""The shared layer cache against a real registry (Debian's docker-registry on loopback, htpasswd
auth): machine A builds and pushes, machine B (an empty store) builds nothing itself; a poisoned
or broken cache never changes or breaks a build."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lxclayer.lock import toml as locktoml

from .conftest import run_cli, write_project
from .registry_support import PASSWORD, USER, FaultProxy, blob_get, registry_fixture

pytestmark = pytest.mark.e2e

ARCHIVE = "test-tpl_1.0-1_amd64.tar.gz"
IMAGE = "test-tpl_1.0-1_amd64.tar"


registry = registry_fixture()


def _auth(path, *addresses):
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    path.write_text(json.dumps({"auths": {a: {"auth": token} for a in addresses}}))
    return path


def _build(proj, store, ref, auth, *extra, env=None):
    r = run_cli("--project", str(proj), "--store", str(store), "build", "--format", "tar.gz", "--format", "oci",
                "--cache", ref, "--cache-auth", str(auth), "--json", *extra, env=env)
    return r, (json.loads(r.stdout) if r.returncode == 0 else None)


def _states(report):
    return {x["name"]: x["state"] for x in report["layers"]}


def test_machine_b_builds_nothing_and_gets_the_same_bytes(tmp_path, registry):
    auth = _auth(tmp_path / "auth.json", registry.address)
    ref = f"oci://{registry.address}/team/cache-ab"
    a = write_project(tmp_path / "a")
    r, rep = _build(a, tmp_path / "store-a", ref, auth, "--cache-mode", "push")
    assert r.returncode == 0, r.stderr
    assert set(_states(rep).values()) == {"built"}
    assert rep["cache"]["pushed"] == ["base", "config", "extra"]
    assert rep["cache"]["outputs_pushed"] > 0
    assert PASSWORD not in r.stdout + r.stderr

    b = write_project(tmp_path / "b")
    r, rep = _build(b, tmp_path / "store-b", ref, auth, "--cache-mode", "pull")
    assert r.returncode == 0, r.stderr
    assert set(_states(rep).values()) == {"pulled"}, rep["layers"]
    assert rep["cache"]["outputs_pulled"] > 0
    for name in (ARCHIVE, IMAGE):
        assert (b / "dist" / name).read_bytes() == (a / "dist" / name).read_bytes()
    assert (b / "locks" / "test-tpl.lock").read_text() == (a / "locks" / "test-tpl.lock").read_text()
    # composed from the cache's chunks: nothing compressed again
    tgz = next(x for x in rep["archives"] if x["format"] == "tar.gz")
    assert tgz["reused"] == tgz["chunks"] > 0

    # A locked build on a third empty store accepts the entries: their outputs are the lock's
    c = write_project(tmp_path / "c")
    shutil.copy(a / "locks" / "test-tpl.lock", c / "locks" / "test-tpl.lock")
    r, rep = _build(c, tmp_path / "store-c", ref, auth, "--locked")
    assert r.returncode == 0, r.stderr
    assert set(_states(rep).values()) == {"pulled"}


def test_a_poisoned_blob_is_detected_and_built_here_and_refused_under_locked(tmp_path, registry):
    auth = _auth(tmp_path / "auth.json", registry.address)
    ref = f"oci://{registry.address}/team/cache-poison"
    a = write_project(tmp_path / "a")
    r, _ = _build(a, tmp_path / "store-a", ref, auth, "--cache-mode", "push")
    assert r.returncode == 0, r.stderr
    lock = locktoml.read(a / "locks" / "test-tpl.lock")
    # alter the pack of the `config` layer in the registry's own storage
    from lxclayer.registry import client_for
    from lxclayer.store.registry import PACK_TYPE, layer_tag

    with client_for(ref, auth_file=auth) as c:
        _, _, data = c.get_manifest(layer_tag(lock.layers["config"].input))
    pack = next(d for d in json.loads(data)["layers"] if d["mediaType"] == PACK_TYPE)
    f = registry.blob_file(pack["digest"])
    good = f.read_bytes()
    raw = bytearray(good)
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    try:
        b = write_project(tmp_path / "b")
        shutil.copy(a / "locks" / "test-tpl.lock", b / "locks" / "test-tpl.lock")
        r, rep = _build(b, tmp_path / "store-b", ref, auth, "--locked")
    finally:
        f.write_bytes(good)  # blobs are shared by every repository of the registry
    assert r.returncode == 0, r.stderr
    states = _states(rep)
    assert states["config"] == "built" and states["base"] == "pulled", states
    assert "cache: layer config refused" in r.stderr
    assert rep["cache"]["refused"] == ["config"]
    assert (b / "dist" / ARCHIVE).read_bytes() == (a / "dist" / ARCHIVE).read_bytes()


def test_under_locked_an_entry_whose_output_is_not_the_locks_is_refused(tmp_path, registry):
    """A stale or poisoned cache entry, consistent in itself (its files hash to their names,
    its manifest to its claimed output), but not what the lock records."""
    auth = _auth(tmp_path / "auth.json", registry.address)
    ref = f"oci://{registry.address}/team/cache-stale"
    a = write_project(tmp_path / "a")
    r, _ = _build(a, tmp_path / "store-a", ref, auth, "--cache-mode", "push")
    assert r.returncode == 0, r.stderr
    lock_path = a / "locks" / "test-tpl.lock"
    text = lock_path.read_text()
    lock = locktoml.read(lock_path)
    bogus = "0" * 32
    b = write_project(tmp_path / "b")
    (b / "locks" / "test-tpl.lock").write_text(text.replace(lock.layers["extra"].output, bogus))
    r, rep = _build(b, tmp_path / "store-b", ref, auth, "--locked")
    # the cache's entry is refused (its output is not the lock's); built here it is not either
    assert "cache: layer extra refused: its output" in r.stderr
    assert f"is not the lock's {bogus[:12]}" in r.stderr
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_registry_down_mid_build_gives_a_correct_build_and_one_line(tmp_path, registry):
    auth = _auth(tmp_path / "auth.json", registry.address)
    ref = f"oci://{registry.address}/team/cache-down"
    a = write_project(tmp_path / "a")
    r, _ = _build(a, tmp_path / "store-a", ref, auth, "--cache-mode", "push")
    assert r.returncode == 0, r.stderr
    registry.stop()
    try:
        b = write_project(tmp_path / "b")
        r, rep = _build(b, tmp_path / "store-b", ref, auth)
    finally:
        registry.start()
    assert r.returncode == 0, r.stderr
    assert set(_states(rep).values()) == {"built"}
    lines = [x for x in r.stderr.splitlines() if "unavailable" in x]
    assert len(lines) == 1, r.stderr
    assert (b / "dist" / ARCHIVE).read_bytes() == (a / "dist" / ARCHIVE).read_bytes()


def test_a_proxy_that_cuts_a_blob_in_half_leaves_a_correct_build(tmp_path, registry):
    ref_direct = f"oci://{registry.address}/team/cache-cut"
    auth = tmp_path / "auth.json"
    a = write_project(tmp_path / "a")
    proxy = FaultProxy(registry.address)
    try:
        _auth(auth, registry.address, proxy.address)
        r, _ = _build(a, tmp_path / "store-a", ref_direct, auth, "--cache-mode", "push")
        assert r.returncode == 0, r.stderr
        proxy.always = None
        proxy.faults = [(blob_get, "cut")] * 20  # every blob download is cut, retries included
        b = write_project(tmp_path / "b")
        r, rep = _build(b, tmp_path / "store-b", f"oci://{proxy.address}/team/cache-cut", auth)
    finally:
        proxy.close()
    assert r.returncode == 0, r.stderr
    assert (b / "dist" / ARCHIVE).read_bytes() == (a / "dist" / ARCHIVE).read_bytes()
    assert "unavailable" in r.stderr and "Traceback" not in r.stderr


def test_offline_never_contacts_the_cache(tmp_path):
    proj = write_project(tmp_path / "p")
    # a cache that cannot exist: contacting it would fail name resolution and say so
    r, rep = _build(proj, tmp_path / "s", "oci://cache.invalid/team/x", _auth(tmp_path / "a.json", "x"),
                    "--offline")
    assert r.returncode == 0, r.stderr
    assert "cache" not in r.stderr
    assert "cache" not in rep


def test_two_machines_pushing_the_same_entries_at_once_both_succeed_with_one_copy(tmp_path, registry):
    from lxclayer.registry import client_for
    from lxclayer.store.registry import layer_tag

    auth = _auth(tmp_path / "auth.json", registry.address)
    ref = f"oci://{registry.address}/team/cache-race"
    projects = [write_project(tmp_path / n) for n in ("a", "b")]
    procs = [subprocess.Popen([sys.executable, "-m", "lxclayer", "--project", str(p), "--store", str(tmp_path / f"s{i}"),
                               "build", "--cache", ref, "--cache-auth", str(auth), "--cache-mode", "push"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
             for i, p in enumerate(projects)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "warning" not in err, err[-3000:]
    # the entries two stores pushed are byte-identical documents: one manifest per tag, whoever won
    lock = locktoml.read(projects[0] / "locks" / "test-tpl.lock")
    other = f"oci://{registry.address}/team/cache-race-2"
    r, _ = _build(write_project(tmp_path / "c"), tmp_path / "s3", other, auth, "--cache-mode", "push")
    assert r.returncode == 0, r.stderr
    with client_for(ref, auth_file=auth) as c1, client_for(other, auth_file=auth) as c2:
        for layer in lock.layers.values():
            assert c1.manifest_digest(layer_tag(layer.input)) == c2.manifest_digest(layer_tag(layer.input))
        assert sum(t.startswith("layer-") for t in c1.tags()) == len(lock.layers)


def test_cache_push_then_ls_and_verify_and_a_team_setting_in_lxclayer_toml(tmp_path, registry):
    from lxclayer.registry import client_for
    from lxclayer.store.registry import layer_tag

    auth = _auth(tmp_path / "auth.json", registry.address)
    ref = f"oci://{registry.address}/team/cache-cmd"
    a = write_project(tmp_path / "a")
    cli = ["--project", str(a), "--store", str(tmp_path / "sa")]
    assert run_cli(*cli, "build", "--format", "tar.gz").returncode == 0
    opts = ["--cache", ref, "--cache-auth", str(auth)]
    r = run_cli(*cli, "cache", "ls", *opts)
    assert r.returncode == 0, r.stderr
    assert "test-tpl: 0 of 3 layers in" in r.stdout
    r = run_cli(*cli, "cache", "push", *opts)
    assert r.returncode == 0, r.stderr
    assert "test-tpl: 3 layer(s) pushed, 0 already cached" in r.stdout
    r = run_cli(*cli, "cache", "push", *opts)
    assert "test-tpl: 0 layer(s) pushed, 3 already cached" in r.stdout
    r = run_cli(*cli, "cache", "ls", *opts)
    assert "test-tpl: 3 of 3 layers in" in r.stdout and "missing" not in r.stdout
    r = run_cli(*cli, "verify", *opts)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cache config: ok" in r.stdout

    # B commits the cache once, in lxclayer.toml, and builds nothing (the chunks came too)
    b = write_project(tmp_path / "b")
    (b / "lxclayer.toml").write_text(f'[cache]\nurl = "{ref}"\nmode = "pull"\n')
    r = run_cli("--project", str(b), "--store", str(tmp_path / "sb"), "build", "--format", "tar.gz", "--json",
                env={"REGISTRY_AUTH_FILE": str(auth)})
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert set(_states(rep).values()) == {"pulled"}, (rep["layers"], r.stderr)
    assert rep["archives"][0]["reused"] == rep["archives"][0]["chunks"]
    assert (b / "dist" / ARCHIVE).read_bytes() == (a / "dist" / ARCHIVE).read_bytes()

    # an entry whose claimed output is not the lock's: verify names it
    lock = locktoml.read(a / "locks" / "test-tpl.lock")
    with client_for(ref, auth_file=auth) as c:
        tag = layer_tag(lock.layers["extra"].input)
        _, _, data = c.get_manifest(tag)
        doc = json.loads(data)
        doc["annotations"]["dev.lxclayer.output"] = "f" * 32
        c.put_manifest(tag, json.dumps(doc).encode())
    r = run_cli(*cli, "verify", *opts)
    assert r.returncode == 1
    assert "cache extra: differs from the lock" in r.stdout
    assert f"claims output {'f' * 32}, the lock records {lock.layers['extra'].output}" in r.stdout


@pytest.mark.parametrize("text,words", [
    ('[cache]\nmode = "sometimes"\n', "lxclayer.toml: key cache.mode: must be one of pull, push, not 'sometimes'"),
    ('[cache]\nurl = "oci://h/r"\ncolour = "red"\n', "lxclayer.toml: key cache"),
    ('[cache\n', "lxclayer.toml: not valid TOML"),
    ('[cache]\nurl = "ftp://host/repo"\n', "cache reference"),
])
def test_bad_cache_settings_are_refused_with_file_and_key(tmp_path, text, words):
    proj = write_project(tmp_path / "p")
    (proj / "lxclayer.toml").write_text(text)
    r = run_cli("--project", str(proj), "--store", str(tmp_path / "s"), "build")
    assert r.returncode == 2, r.stdout + r.stderr
    assert words in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (proj / "dist").exists()
