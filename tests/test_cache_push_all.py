"""`lxclayer cache push --all`: every project that builds into one store (its GC roots) is
uploaded, and `cache ls --all` then lists both projects' layers as cached."""

from __future__ import annotations

import base64
import json

import pytest

from lxclayer.lock import toml as locktoml

from .conftest import run_cli, write_project
from .registry_support import PASSWORD, USER, registry_fixture

pytestmark = pytest.mark.e2e

registry = registry_fixture()


def test_cache_push_all_uploads_every_project_of_the_store(tmp_path, registry):
    auth = tmp_path / "auth.json"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth.write_text(json.dumps({"auths": {registry.address: {"auth": token}}}))
    ref = f"oci://{registry.address}/team/cache-all"
    store = tmp_path / "store"
    a = write_project(tmp_path / "a")
    b = write_project(tmp_path / "b")
    # B is another template (another name, another config file): it shares base and extra with A
    tpl = b / "layers" / "template.toml"
    tpl.write_text(tpl.read_text().replace('name = "test-tpl"', 'name = "other-tpl"'))
    (b / "layers" / "config" / "root" / "etc" / "motd").write_text("other\n")
    for proj in (a, b):
        r = run_cli("--project", str(proj), "--store", str(store), "build")
        assert r.returncode == 0, r.stderr
    lock_a = locktoml.read(a / "locks" / "test-tpl.lock")
    lock_b = locktoml.read(b / "locks" / "other-tpl.lock")
    assert lock_a.layers["config"].input != lock_b.layers["config"].input

    opts = ["--cache", ref, "--cache-auth", str(auth)]
    # run from A: --all is every project of the store, not only A's locks
    r = run_cli("--project", str(a), "--store", str(store), "cache", "push", "--all", *opts)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    out = r.stdout.splitlines()
    assert f"test-tpl ({a / 'locks' / 'test-tpl.lock'}): 3 layer(s) pushed, 0 already cached" in out
    # base and extra are the same entries as A's: already there when B's turn comes
    assert f"other-tpl ({b / 'locks' / 'other-tpl.lock'}): 1 layer(s) pushed, 2 already cached" in out

    r = run_cli("--project", str(a), "--store", str(store), "cache", "ls", "--all", *opts)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"other-tpl ({b / 'locks' / 'other-tpl.lock'}): 3 of 3 layers in" in r.stdout
    assert f"test-tpl ({a / 'locks' / 'test-tpl.lock'}): 3 of 3 layers in" in r.stdout
    assert "missing" not in r.stdout
    for lock in (lock_a, lock_b):
        for name, layer in lock.layers.items():
            assert f"cached   {name}  {layer.input}" in r.stdout

    # a project whose checkout is gone is a dead root: --all leaves it out, and says nothing of it
    (b / "locks" / "other-tpl.lock").unlink()
    r = run_cli("--project", str(a), "--store", str(store), "cache", "push", "--all", *opts)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [f"test-tpl ({a / 'locks' / 'test-tpl.lock'}): 0 layer(s) pushed,"
                                     " 3 already cached"]
