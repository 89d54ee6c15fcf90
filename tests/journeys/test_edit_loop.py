"""The everyday loop, on both templates: edit something, build, look at what was rebuilt; undo
it, build, and get back the very bytes of before (the store answers from cache).

What is asserted is what a user sees: the exit code, which layers the `--json` report says were
built and which cached, the archives' sha256, the lock's bytes and `lock diff`'s lines.
"""

from __future__ import annotations

import pytest

from .conftest import TEMPLATES

pytestmark = pytest.mark.e2e

REDIS = "layers/redis/layer.toml"
REDIS_PACKAGES = 'packages = ["redis-server", "redis-tools"]'
CONF = "layers/redis-cluster/root/etc/redis/cluster/redis.conf"
SCRIPT = "layers/services-accounts/accounts.sh"
CLUSTER = "layers/redis-cluster/layer.toml"
NEW = "journey-motd"


@pytest.fixture(params=TEMPLATES)
def template(request) -> str:
    return request.param


def _other(template: str) -> str:
    return next(t for t in TEMPLATES if t != template)


def _template_file(template: str) -> str:
    return f"templates/{template}.toml"


def _start(j, template):
    """The user's first build of the clone: nothing to build (the store has it all), the
    archives are the lock's."""
    lock = j.lock(template)
    r = j.build(template)
    assert r.built == set() and r.cached == set(lock.stack), r
    assert r.sha256() == lock.sha256(), r
    return lock


def _timeless(lock: bytes) -> bytes:
    return b"".join(ln for ln in lock.splitlines(keepends=True) if not ln.startswith(b"resolved_at = "))


def _undone(j, template, before) -> None:
    """After an edit is undone: nothing built, the archives byte for byte as before, and the lock
    too but for the `resolved_at` of a layer whose pins were resolved again (a record of when,
    part of no digest, which `lock diff` does not report: docs/lockfile.md)."""
    r = j.build(template)
    assert r.built == set() and r.cached == set(before.stack), r
    assert _timeless(j.lock_file(template).read_bytes()) == _timeless(before.bytes), \
        j.lx("--template", template, "lock", "diff").out
    assert r.sha256() == before.sha256(), r
    d = j.lx("--template", template, "lock", "diff")
    assert (d.rc, d.out) == (0, "no changes\n"), d


def test_a_package_added_to_a_mid_stack_apt_layer_then_removed(journey, template):
    """jq into layers/redis: redis and every program layer above it are built (they read the
    tree below), the files layers stay cached; the lock pins jq in redis. Taken out again,
    nothing is built and the lock and the archives are what they were."""
    j = journey
    before = _start(j, template)
    j.edit(REDIS, REDIS_PACKAGES, REDIS_PACKAGES.replace('"]', '", "jq"]'))
    r = j.build(template)
    assert r.built == before.rebuilt_by("redis"), r
    assert r.cached == set(before.stack) - before.rebuilt_by("redis"), r
    after = j.lock(template)
    assert "jq" in after.packages("redis") and "jq" not in before.packages("redis")
    assert r.sha256() == after.sha256()
    assert set(r.sha256().values()).isdisjoint(before.sha256().values())
    d = j.lx("--template", template, "lock", "diff")
    assert d.rc == 0, d
    assert f"redis: + jq {after.packages('redis')['jq']['version']}" in d.out.splitlines(), d

    j.restore(REDIS)
    _undone(j, template, before)


def test_a_config_file_edited_rebuilds_its_files_layer_only(journey, template):
    """A line added to a config file of a files layer: that layer alone is built; `lock diff`
    (against git HEAD) names the file; undone, everything is as before."""
    j = journey
    before = _start(j, template)
    p = j.path(CONF)
    p.write_text(p.read_text() + "# a note the user adds\n")
    r = j.build(template)
    assert r.built == {"redis-cluster"}, r
    assert r.cached == set(before.stack) - {"redis-cluster"}, r
    assert set(r.sha256().values()).isdisjoint(before.sha256().values())
    d = j.lx("--template", template, "lock", "diff")
    assert d.rc == 0, d
    lines = d.out.splitlines()
    assert "redis-cluster: file root/etc/redis/cluster/redis.conf changed" in lines, d
    assert {ln.split(":")[0] for ln in lines} == {"redis-cluster", "tar.gz", "oci"}, d

    j.restore(CONF)
    _undone(j, template, before)


def test_a_script_edited_rebuilds_its_layer_and_the_rest_is_cut_off(journey, template):
    """A line added to a script layer's script: the layer is built again; its output is the
    same files, so nothing above it is (early cut-off) and the tar.gz keeps its bytes. The lock
    records the new script."""
    j = journey
    before = _start(j, template)
    p = j.path(SCRIPT)
    p.write_text(p.read_text() + 'echo "stock-analysis account ready"\n')
    r = j.build(template)
    assert r.built == {"services-accounts"}, r
    assert r.cached == set(before.stack) - {"services-accounts"}, r
    # The same files: the same tar.gz. (The OCI image's config carries the lock's digest as a
    # label, which names every input, so its digest moves with any edit.)
    assert r.sha256()["tar.gz"] == before.sha256()["tar.gz"], r
    after = j.lock(template)
    assert after.layer("services-accounts")["output"] == before.layer("services-accounts")["output"]
    assert after.layer("services-accounts")["sources"]["accounts.sh"] != before.layer("services-accounts")["sources"]["accounts.sh"]
    d = j.lx("--template", template, "lock", "diff")
    assert "services-accounts: file accounts.sh changed" in d.out.splitlines(), d

    j.restore(SCRIPT)
    _undone(j, template, before)


def test_a_var_rebuilds_only_the_layers_that_read_it(journey, template):
    """[vars]: a var only descriptions use (`debian`) changes no layer; a var a shared files
    layer's settings use (the group of redis-cluster's files, made a var here) rebuilds that
    layer alone, in that template alone."""
    j = journey
    before = _start(j, template)
    tfile = _template_file(template)
    debian = j.lock(template).doc["template"]["name"].split("-")[1]
    j.edit(tfile, f'debian = "{debian}"', f'debian = "{debian} (a new description)"')
    r = j.build(template)
    assert r.built == set() and r.cached == set(before.stack), r
    assert r.sha256() == before.sha256(), r
    assert j.lock_file(template).read_bytes() == before.bytes
    j.restore(tfile)

    # redis-cluster's group as a var of both templates, with the value it had: same settings.
    text = j.path(CLUSTER).read_text()
    assert text.count('group = "redis"') == 2
    j.path(CLUSTER).write_text(text.replace('group = "redis"', 'group = "{{redis_group}}"'))
    for t in TEMPLATES:
        j.edit(_template_file(t), "[vars]\n", '[vars]\nredis_group = "redis"\n')
    r = j.build(template)
    assert r.built == set(), r
    assert r.sha256() == before.sha256(), r
    assert j.lock_file(template).read_bytes() == before.bytes

    # Another group per template: with the same value both would resolve it to the same id and
    # share one entry, which the first template's journey would have built already.
    j.edit(tfile, 'redis_group = "redis"', f'redis_group = "{"root" if template == TEMPLATES[0] else "adm"}"')
    r = j.build(template)
    assert r.built == {"redis-cluster"}, r
    assert r.cached == set(before.stack) - {"redis-cluster"}, r
    d = j.lx("--template", template, "lock", "diff")
    assert "redis-cluster" in {ln.split(":")[0] for ln in d.out.splitlines()}, d
    # The other template sets its own value: nothing of it is to build.
    p = j.lx("--template", _other(template), "plan", "--json")
    assert p.rc == 0, p
    assert {x["name"]: x["state"] for x in p.report if x["state"] != "cached"} == {}, p

    for rel in (CLUSTER, *map(_template_file, TEMPLATES)):
        j.restore(rel)
    _undone(j, template, before)


def test_a_new_layer_added_to_the_template_then_removed(journey, template):
    """A new files layer in the stack: it alone is built, the lock gains it and `lock diff`
    says so; taken out of the template (and its folder removed), the lock and the archives are
    what they were."""
    j = journey
    before = _start(j, template)
    layer = j.path(f"layers/{NEW}")
    (layer / "root/etc").mkdir(parents=True)
    # Its own words per template: a files layer that is the same in both would be one store
    # entry, built by the first template's journey and found cached by the second's.
    (layer / "root/etc/motd").write_text(f"{template}: managed by lxclayer\n")
    (layer / "layer.toml").write_text('kind = "files"\ndescription = "The message of the day."\n')
    tfile = _template_file(template)
    j.edit(tfile, '\n  "services",', f'\n  "{NEW}",\n  "services",')
    r = j.build(template)
    assert r.built == {NEW}, r
    assert r.cached == set(before.stack), r
    after = j.lock(template)
    assert after.stack == [*before.stack[:-1], NEW, before.stack[-1]]
    d = j.lx("--template", template, "lock", "diff")
    assert any(ln.startswith(f"{NEW}: layer added (files, 1 source file,") for ln in d.out.splitlines()), d

    j.restore(tfile)
    j.restore(f"layers/{NEW}")
    _undone(j, template, before)
