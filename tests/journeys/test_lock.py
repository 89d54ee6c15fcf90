"""The lock as a reviewer reads it: `lock diff` against git HEAD and between the two templates,
and `lock --upgrade` when upstream has nothing new."""

from __future__ import annotations

import json

import pytest

from .conftest import DEFAULT, TEMPLATES, git

pytestmark = pytest.mark.e2e

D12, D13 = sorted(TEMPLATES)
CONF = "layers/postgresql-config/root/usr/lib/systemd/system/postgresql@.service.d/stock-analysis.conf"


def test_lock_diff_between_the_two_templates(journey):
    """Files or git revisions: one line per change; the layers the templates share (same input)
    are named first, the Debian 13 only layers are added, PostgreSQL 15 gives way to 17."""
    j = journey
    old, new = j.lock(D12), j.lock(D13)
    by_file = j.lx("lock", "diff", f"locks/{D12}.lock", f"locks/{D13}.lock")
    by_rev = j.lx("lock", "diff", f"HEAD:locks/{D12}.lock", f"HEAD:locks/{D13}.lock")
    assert by_file.rc == 0 and by_rev.rc == 0, (by_file, by_rev)
    assert by_file.out == by_rev.out
    lines = by_file.out.splitlines()
    assert lines[0] == f"template: name {D12} → {D13}", by_file
    shared = [n for n in new.stack if n in old.stack and old.layer(n)["input"] == new.layer(n)["input"]]
    assert shared, "the templates share files layers"
    said = next(ln for ln in lines if ln.startswith("template: shared: "))
    assert said.startswith(f"template: shared: {', '.join(shared)} (same output)"), said
    for added in sorted(set(new.stack) - set(old.stack)):
        assert any(ln.startswith(f"{added}: layer added (") for ln in lines), by_file
    pg_old = next(p for p in old.packages("postgresql") if p.startswith("postgresql-1") and "client" not in p)
    pg_new = next(p for p in new.packages("postgresql") if p.startswith("postgresql-1") and "client" not in p)
    assert (pg_old, pg_new) == ("postgresql-15", "postgresql-17")
    assert any(ln.startswith(f"postgresql: - {pg_old} ") for ln in lines), by_file
    assert any(ln.startswith(f"postgresql: + {pg_new} ") for ln in lines), by_file
    for name in shared:  # a shared layer has no line of its own
        assert not any(ln.startswith(f"{name}: ") for ln in lines), by_file
    # And in markdown, for a pull request: one row per change.
    md = j.lx("lock", "diff", f"locks/{D12}.lock", f"locks/{D13}.lock", "--format", "markdown")
    assert md.rc == 0 and len(md.out.splitlines()) == len(lines) + 2, md


@pytest.mark.parametrize("template", TEMPLATES)
def test_lock_diff_against_head_after_an_edit(journey, template):
    """Against git HEAD (the default): nothing after a clone; after an edit and a build, the
    edited file and the archives; after a commit, nothing again."""
    j = journey
    assert j.lx("--template", template, "lock", "diff").out == "no changes\n"
    p = j.path(CONF)
    # A note naming the template: postgresql-config is one store entry for both templates, and
    # the same edit would have been built by the other template's journey already.
    p.write_text(p.read_text() + f"# {template}\n")
    assert j.build(template).built == {"postgresql-config"}
    d = j.lx("--template", template, "lock", "diff")
    assert d.rc == 0, d
    lines = d.out.splitlines()
    assert "postgresql-config: file root/usr/lib/systemd/system/postgresql@.service.d/stock-analysis.conf changed" in lines, d
    assert any(ln.startswith("tar.gz: size ") or ln.startswith("tar.gz: sha256 ") for ln in lines), d
    git(j.project, "commit", "-q", "-am", "postgresql: a note")
    assert j.lx("--template", template, "lock", "diff").out == "no changes\n"
    back = j.lx("--template", template, "lock", "diff", "HEAD~1")
    assert back.out == d.out, back


def _explained_by_upstream(j, old: bytes, new: bytes) -> bool:
    """Whether two locks differ only as an upstream release between two runs makes them differ:
    some pin moved (a package or wheel version or hash), and no source file or definition did."""
    a, b = j.root / "a.lock", j.root / "b.lock"
    a.write_bytes(old)
    b.write_bytes(new)
    changes = json.loads(j.lx("lock", "diff", str(a), str(b), "--format", "json").out)
    kinds = {c["kind"] for c in changes}
    return "artifact" in kinds and not kinds & {"source", "layer", "template"}


def test_lock_upgrade_when_nothing_changed_upstream_keeps_the_lock(journey):
    """`lock --upgrade` resolves every pin again. Run twice in a row, the second run finds what
    the first found: it builds nothing, says the lock is up to date and leaves it byte for byte.

    Why this cannot be flaky: the first run brings the lock to today's upstream (whatever
    Debian and PyPI published since the lock was committed); only a release published in the
    seconds between the two runs can make them differ, and then the locks differ by pins alone.
    That case, recognised by `lock diff` (artifacts changed, no source, layer or definition),
    is run once more: two upstream releases within a minute of each other do not happen. A
    difference in anything but pins fails at once.

    The default template only: the first run builds again every layer whose pins moved since
    the lock was committed (on most days a security update moves base-os, and with it every
    program layer), which costs CI a cold build of the template."""
    j = journey
    template = DEFAULT
    first = j.lx("--template", template, "lock", "--upgrade")
    assert first.rc == 0 and "Traceback" not in first.err, first
    upgraded = j.lock_file(template).read_bytes()
    for _ in range(2):
        again = j.lx("--template", template, "lock", "--upgrade")
        assert again.rc == 0 and "Traceback" not in again.err, again
        now = j.lock_file(template).read_bytes()
        if now == upgraded:
            break
        assert _explained_by_upstream(j, upgraded, now), j.lx("lock", "diff", str(j.root / "a.lock"), str(j.root / "b.lock"))
        upgraded = now
    else:
        pytest.fail("lock --upgrade changed the lock on three runs in a row")
    assert f"{j.lock_file(template)} is up to date" in again.out.splitlines(), again
    assert not [ln for ln in again.err.splitlines() if ln.lstrip().startswith("built ")], again
