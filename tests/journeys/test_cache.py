"""A team's shared layer cache and the image registry, on Debian's docker-registry on loopback
(htpasswd auth): push what the store holds, list it, build on a machine with an empty store
from the cache alone; push the template's image."""

from __future__ import annotations

import re

import pytest

from ..registry_support import PASSWORD, auth_file, registry_fixture
from .conftest import DEFAULT, TEMPLATES, lxclayer

pytestmark = pytest.mark.e2e

registry = registry_fixture()


@pytest.fixture
def auth(tmp_path, registry):
    return auth_file(tmp_path / "auth.json", registry.address)


def _clean(r):
    assert "Traceback" not in r.err + r.out, r
    assert PASSWORD not in r.err + r.out, r
    return r


def test_cache_push_ls_and_a_build_from_the_cache_into_an_empty_store(journey, registry, auth, scratch_dir):
    """`cache ls` before and after `cache push` (both templates, every layer once), `cache push
    --all` (the store's roots: nothing left to send), then a `--locked` build into an empty store
    that pulls every layer and gives the lock's archives."""
    j = journey
    cache = ("--cache", f"oci://{registry.address}/journeys/cache", "--cache-auth", str(auth))
    locks = {t: j.lock(t) for t in TEMPLATES}
    for t in TEMPLATES:  # the user's builds register the locks as the store's roots (for --all)
        assert j.build(t).built == set()

    ls = _clean(j.lx("cache", "ls", *cache))
    assert ls.rc == 0, ls
    for t, lock in locks.items():
        assert f"{t}: 0 of {len(lock.stack)} layers in oci://{registry.address}/journeys/cache" in ls.out.splitlines(), ls

    push = _clean(j.lx("cache", "push", *cache))
    assert push.rc == 0, push
    pushed = 0
    for t, lock in locks.items():
        m = re.search(rf"^{t}: (\d+) layer\(s\) pushed, (\d+) already cached$", push.out, re.M)
        assert m, push
        pushed += int(m[1])
        assert int(m[1]) + int(m[2]) == len(lock.stack), push
    # A layer both templates share (same input: the files layers that read nothing below) is sent once.
    assert pushed == len({lock.layer(n)["input"] for lock in locks.values() for n in lock.stack}), push

    ls = _clean(j.lx("cache", "ls", *cache))
    for t, lock in locks.items():
        assert f"{t}: {len(lock.stack)} of {len(lock.stack)} layers in oci://{registry.address}/journeys/cache" in ls.out.splitlines(), ls
    assert "missing" not in ls.out, ls

    # --all: every lock that builds into this store (its GC roots); all there already.
    every = _clean(j.lx("cache", "push", "--all", *cache))
    assert every.rc == 0, every
    for t, lock in locks.items():
        assert f"{t} ({j.lock_file(t)}): 0 layer(s) pushed, {len(lock.stack)} already cached" in every.out.splitlines(), every

    # Another machine: an empty store, the same checkout. Every layer comes from the cache, and
    # the archives from the cached chunks and image blobs. (The default template: pulling is the
    # same code for both, and each template's pull moves about 1.5 GB through the registry.)
    empty = scratch_dir / "empty-store"
    lock = locks[DEFAULT]
    r = _clean(lxclayer(j.project, empty, "--template", DEFAULT, "build", "--locked", "--json", *cache,
                        "--cache-mode", "pull", "--out", str(scratch_dir / "dist")))
    assert r.rc == 0, r
    assert r.layers("pulled") == set(lock.stack), r
    assert r.sha256() == lock.sha256(), r


def test_push_the_image_to_a_registry(journey, registry, auth):
    """`push`: the image the lock pins, under VERSION-RELEASE; pushed again, nothing is sent."""
    j = journey
    for t in TEMPLATES:
        lock = j.lock(t)
        ref = f"{registry.address}/templates/{t}"
        r = _clean(j.lx("--template", t, "push", ref, "--auth", str(auth), "--json"))
        assert r.rc == 0, r
        res = r.report
        assert res["digest"] == lock.doc["template"]["archives"]["oci"]["image"], r
        assert res["reference"] == f"{ref}:1.0.0-1"
        assert res["sent"] == res["blobs"] >= len(lock.stack), r
        again = _clean(j.lx("--template", t, "push", ref, "--auth", str(auth), "--json"))
        assert again.rc == 0 and again.report["sent"] == 0 and again.report["digest"] == res["digest"], again
