"""The lock as a reviewer reads it: `lock diff` against git HEAD and between the two templates,
and `lock --upgrade` when upstream has nothing new."""

from __future__ import annotations

import pytest

from .conftest import TEMPLATES

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
    p.write_text(p.read_text() + "# journeys\n")
    assert j.build(template).built == {"postgresql-config"}
    d = j.lx("--template", template, "lock", "diff")
    assert d.rc == 0, d
    lines = d.out.splitlines()
    assert "postgresql-config: file root/usr/lib/systemd/system/postgresql@.service.d/stock-analysis.conf changed" in lines, d
    assert any(ln.startswith("tar.gz: size ") or ln.startswith("tar.gz: sha256 ") for ln in lines), d
    from .conftest import git

    git(j.project, "commit", "-q", "-am", "postgresql: a note")
    assert j.lx("--template", template, "lock", "diff").out == "no changes\n"
    back = j.lx("--template", template, "lock", "diff", "HEAD~1")
    assert back.out == d.out, back
