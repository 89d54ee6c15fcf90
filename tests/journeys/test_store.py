"""The store over time, as a user meets it: two projects sharing one store and collecting its
garbage, damage found, named and healed, and a rebuild with no network at all."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from lxclayer.store import Store

from .conftest import DEFAULT, TEMPLATES, Lock, clone_store, copy_project, damage_blob, lxclayer

pytestmark = pytest.mark.e2e

CONF = "layers/redis-cluster/root/etc/redis/cluster/redis.conf"


@pytest.fixture(params=TEMPLATES)
def template(request) -> str:
    return request.param


def _lines(r, prefix: str) -> list[str]:
    return [ln for ln in r.out.splitlines() if ln.startswith(prefix)]


def test_gc_with_two_projects_sharing_one_store(warm, tmp_path, scratch_dir):
    """Projects A and B build into one store. What B's lock names is kept when gc runs from A;
    what no lock names any more (B's edit, undone) goes; a later `--locked` build of either
    builds nothing; B deleted, its root is dead and gc says so."""
    store = clone_store(warm.store, scratch_dir / "store", share_snapshots=False)
    a = copy_project(warm.project, tmp_path / "a")
    b = copy_project(warm.project, tmp_path / "b")

    def lx(project, *args):
        r = lxclayer(project, store, *args)
        assert "Traceback" not in r.err, r
        return r

    assert lx(a, "build", "--json").rc == 0
    conf = b / CONF
    conf.write_text(conf.read_text() + "# project B's own setting\n")
    r = lx(b, "build", "--json")
    assert r.rc == 0 and r.built == {"redis-cluster"}, r
    b_only = Lock((b / "locks" / f"{DEFAULT}.lock").read_bytes()).layer("redis-cluster")["input"]

    dry = lx(a, "gc", "--dry-run")
    assert dry.rc == 0, dry
    assert f"root {a / 'locks' / f'{DEFAULT}.lock'}" in dry.out.splitlines(), dry
    assert f"root {b / 'locks' / f'{DEFAULT}.lock'}" in dry.out.splitlines(), dry
    freed = _lines(dry, "would free layer entry ")
    needed = {Lock((p / "locks" / f"{t}.lock").read_bytes()).layer(n)["input"][:12]
              for p in (a, b) for t in TEMPLATES for n in Lock((p / "locks" / f"{t}.lock").read_bytes()).stack}
    assert not [ln for ln in freed if ln.split()[4] in needed], dry
    assert b_only[:12] in needed

    # B undoes its edit: its entry of redis-cluster is named by no lock now.
    shutil.copyfile(a / CONF, conf)
    assert lx(b, "build", "--json").built == set()
    dry = lx(b, "gc", "--dry-run")
    assert dry.rc == 0, dry
    assert _lines(dry, f"would free layer entry {b_only[:12]} (redis-cluster, files, "), dry
    g = lx(a, "gc")
    assert g.rc == 0 and _lines(g, "freed "), g
    again = lx(a, "gc", "--dry-run")
    assert _lines(again, "would free layer entry ") == [], again
    assert "would free 0 B: 0 layer entries" in again.out, again

    # Nothing either project needs was removed: each would build nothing, and a --locked build
    # of the template neither built here (its entries kept for A's locks/) gives the lock's bytes.
    for p in (a, b):
        for t in TEMPLATES:
            r = lx(p, "--template", t, "plan", "--json")
            assert r.rc == 0 and {x["state"] for x in r.report} == {"cached"}, r
    other = next(t for t in TEMPLATES if t != DEFAULT)
    lock = Lock((a / "locks" / f"{other}.lock").read_bytes())
    r = lx(a, "--template", other, "build", "--locked", "--json")
    assert r.rc == 0 and r.built == set() and r.cached == set(lock.stack), r
    assert r.sha256() == lock.sha256(), r

    # B's checkout is deleted: its root is dead, and gc says so and removes it.
    shutil.rmtree(b)
    dry = lx(a, "gc", "--dry-run")
    assert f"would remove dead root {b / 'locks' / f'{DEFAULT}.lock'} (the lockfile is gone)" in dry.out.splitlines(), dry
    g = lx(a, "gc")
    assert f"removed dead root {b / 'locks' / f'{DEFAULT}.lock'} (the lockfile is gone)" in g.out.splitlines(), g
    assert f"root {b / 'locks' / f'{DEFAULT}.lock'}" not in lx(a, "gc", "--dry-run").out.splitlines()


# Per damage, the layer whose blob is damaged: a files layer, another files layer, a script layer
# (its repair runs the script again and must give the lock's output).
DAMAGE = (("flip", "redis-cluster", "etc/redis/cluster/"), ("truncate", "services", "opt/"),
          ("delete", "services-accounts", "usr/lib/sysusers.d/"))


def _victims(store_root, lock: Lock) -> dict[str, tuple[str, str, str]]:
    """Per damage: (layer, file, blob) of a file only that layer holds (so that its damage is
    that layer's alone)."""
    store = Store(store_root)
    manifests = {n: store.lookup(lock.layer(n)["input"], layer=n).entries for n in lock.stack}
    used = Counter(e.hash for entries in manifests.values() for e in entries if e.type == "file")
    out = {}
    for how, layer, under in DAMAGE:
        e = next(e for e in sorted(manifests[layer], key=lambda e: e.path)
                 if e.type == "file" and e.size > 0 and used[e.hash] == 1 and e.path.startswith(under))
        out[how] = (layer, e.path, e.hash)
    return out


def test_damaged_blobs_are_named_repaired_and_the_lock_reproduced(own_journey, template):
    """A blob flipped, one truncated, one deleted: `verify` names each with its layer and file,
    `verify --rebuild` of a damaged layer names it too, `verify --repair` heals all three and
    says so, and a build that must compress every blob again (no chunk cached) gives the
    lock's archive."""
    j = own_journey
    lock = j.lock(template)
    v = j.lx("--template", template, "verify")
    assert v.rc == 0, v
    victims = _victims(j.store, lock)
    for how, (_, _, blob) in victims.items():
        damage_blob(Store(j.store).blob_path(blob), how)

    v = j.lx("--template", template, "verify")
    assert v.rc == 1 and "Traceback" not in v.err, v
    for layer, path, blob in victims.values():
        said = [ln for ln in v.out.splitlines() if path in ln]
        assert said and blob[:12] in said[0], v
        assert any(ln.startswith(f"{layer}:") for ln in v.out.splitlines()), v

    layer, path, blob = victims["flip"]
    vr = j.lx("--template", template, "verify", "--rebuild", layer)
    assert vr.rc == 1 and "Traceback" not in vr.err, vr
    assert path in vr.out and blob[:12] in vr.out and layer in vr.out, vr

    rep = j.lx("--template", template, "verify", "--repair")
    assert rep.rc == 0 and "Traceback" not in rep.err, rep
    for layer, _, _ in victims.values():
        assert layer in rep.out + rep.err, rep
    v = j.lx("--template", template, "verify")
    assert v.rc == 0, v
    vr = j.lx("--template", template, "verify", "--rebuild", victims["flip"][0])
    assert vr.rc == 0 and f"{victims['flip'][0]}: reproducible" in vr.out.splitlines(), vr

    # No chunk cached: composing reads every blob again.
    shutil.rmtree(j.store / "chunks")
    r = j.build(template, "--locked", "--format", "tar.gz", "--out", str(j.root / "dist-again"))
    assert r.built == set() and r.sha256()["tar.gz"] == lock.sha256()["tar.gz"], r


def test_a_build_meets_a_damaged_blob_and_heals_it(own_journey):
    """No verify first: a `--locked` build that must compress a damaged blob again evicts the
    entry naming it, builds that layer again (its output must be the lock's) and gives the lock's
    archive, instead of failing on `blob ... does not match its hash`. (The default template
    only: the path is the same for both, and a compose from no cached chunk costs CI 15 s.)"""
    j = own_journey
    template = DEFAULT
    lock = j.lock(template)
    layer, path, blob = _victims(j.store, lock)["flip"]
    damage_blob(Store(j.store).blob_path(blob), "flip")
    shutil.rmtree(j.store / "chunks")
    r = j.build(template, "--locked", "--format", "tar.gz")
    assert r.built == {layer} and r.cached == set(lock.stack) - {layer}, r
    assert r.sha256()["tar.gz"] == lock.sha256()["tar.gz"], r
    assert j.lx("--template", template, "verify").rc == 0


def test_an_offline_rebuild_from_a_warm_store_needs_no_network(own_journey, template):
    """Two layer entries lost (an apt layer and a uv layer): `build --offline`, run where there is
    no network at all (a network namespace of its own, not even loopback up), builds them again
    from the packages and wheels already in the store; the lock and the archives are the same."""
    j = own_journey
    lock = j.lock(template)
    lost = {"redis", "uv"}
    for name in lost:
        shutil.rmtree(j.store / "layers" / lock.layer(name)["input"])
    r = j.build(template, "--offline", prefix=("unshare", "--net", "--"))
    assert r.built == lost and r.cached == set(lock.stack) - lost, r
    assert r.sha256() == lock.sha256(), r
    assert j.lock_file(template).read_bytes() == lock.bytes
