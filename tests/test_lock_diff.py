"""lxclayer.lock.diff: one line per change, text / markdown / json, and the git plumbing."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lxclayer.errors import LockError
from lxclayer.lock import toml
from lxclayer.lock.diff import diff, git_external, load_side, render, size_text
from lxclayer.lock.model import Artifact, LockedArchive, LockedLayer, LockedTemplate, Lockfile

OLD_SHA = "0123456789abcdef" * 4
NEW_SHA = "fedcba9876543210" * 4


def pkg(name: str, version: str, sha: str = OLD_SHA, arch: str = "amd64") -> Artifact:
    return Artifact(name=name, version=version, arch=arch, sha256=sha,
                    source=f"pool/main/{name}_{version}_{arch}.deb")


def layer(kind: str = "apt", *, out: str = "a" * 32, inp: str = "b" * 32,
          packages: dict[str, Artifact] | None = None,
          sources: dict[str, str] | None = None) -> LockedLayer:
    return LockedLayer(kind=kind, builder=f"{kind}/1", settings="c" * 32, input=inp, output=out,
                       sources=sources or {},
                       artifacts={"packages": packages} if packages else {})


def lockfile(**layers: LockedLayer) -> Lockfile:
    return Lockfile(
        lock_version=1,
        template=LockedTemplate(
            name="debian-12-stock-analysis", version="1.0.0", release=1, arch="amd64",
            source_date_epoch=1764028800, definition="d" * 32,
            archives={"tar.gz": LockedArchive(file="t_1.0.0-1_amd64.tar.gz", sha256=OLD_SHA,
                                              size=211_078_758)},
        ),
        layers=dict(layers),
    )


def base() -> Lockfile:
    return lockfile(**{
        "base-os": layer("mmdebstrap", packages={"libbar": pkg("libbar", "4.5"),
                                                 "libc6": pkg("libc6", "2.36-9")}),
        "postgresql": layer(packages={"postgresql-15": pkg("postgresql-15", "15.13-0+deb12u1")}),
        "redis-config": layer("files", sources={"root/etc/redis/redis.conf": "1" * 32,
                                                "root/usr/bin/x": "2" * 32}),
    })


def text(old: Lockfile | None, new: Lockfile | None) -> list[str]:
    return render(diff(old, new), "text").splitlines()


# --- each kind of change ---------------------------------------------------------------------


def test_no_changes() -> None:
    assert render(diff(base(), base()), "text") == "no changes\n"
    assert diff(None, None) == []
    assert render([], "json") == "[]\n"


def test_artifact_version_added_removed() -> None:
    new = base()
    new.layers["postgresql"].artifacts["packages"]["postgresql-15"] = pkg(
        "postgresql-15", "15.14-0+deb12u1", NEW_SHA)
    pk = new.layers["base-os"].artifacts["packages"]
    del pk["libbar"]
    pk["libfoo"] = pkg("libfoo", "1.2-3")
    assert text(base(), new) == [
        "base-os: - libbar 4.5",
        "base-os: + libfoo 1.2-3",
        "postgresql: postgresql-15 15.13-0+deb12u1 → 15.14-0+deb12u1",
    ]


def test_artifact_same_version_new_hash() -> None:
    new = base()
    new.layers["base-os"].artifacts["packages"]["libc6"] = pkg("libc6", "2.36-9", NEW_SHA)
    assert text(base(), new) == [
        "base-os: libc6 2.36-9: sha256 0123456789ab… → fedcba987654…",
    ]


def test_source_changed_added_removed_and_mode() -> None:
    new = base()
    src = new.layers["redis-config"].sources
    src["root/etc/redis/redis.conf"] = "3" * 32
    src["root/usr/bin/x"] = "2" * 32 + " x"
    src["root/etc/new"] = "4" * 32
    old = base()
    old.layers["redis-config"].sources["root/etc/gone"] = "5" * 32
    assert text(old, new) == [
        "redis-config: - file root/etc/gone",
        "redis-config: + file root/etc/new",
        "redis-config: file root/etc/redis/redis.conf changed",
        "redis-config: file root/usr/bin/x changed (now executable)",
    ]


def test_layer_digests_are_short() -> None:
    new = base()
    new.layers["redis-config"].output = "e" * 32
    new.layers["redis-config"].input = "f" * 32
    assert text(base(), new) == [
        "redis-config: input bbbbbbbbbbbb… → ffffffffffff…",
        "redis-config: output aaaaaaaaaaaa… → eeeeeeeeeeee…",
    ]


def test_layer_added_and_removed_in_stack_order() -> None:
    old = base()
    new = base()
    del new.layers["postgresql"]
    new.layers["python"] = layer("uv", packages={"numpy": pkg("numpy", "2.1.0")})
    assert text(old, new) == [
        "postgresql: layer removed (apt, 0 source files, 1 artifact)",
        "postgresql: - postgresql-15 15.13-0+deb12u1",
        "python: layer added (uv, 0 source files, 1 artifact, output aaaaaaaaaaaa…)",
        "python: + numpy 2.1.0",
    ]
    changes = diff(old, new)
    assert [(c.kind, c.layer, c.old is None, c.new is None) for c in changes[::2]] == [
        ("layer", "postgresql", False, True), ("layer", "python", True, False)]


def test_removed_layer_keeps_its_place_below_its_neighbour() -> None:
    new = base()
    del new.layers["base-os"]
    new.layers = {"postgresql": new.layers["postgresql"], "redis-config": new.layers[
        "redis-config"]}
    lines = text(base(), new)
    assert lines[0].startswith("base-os: layer removed")


def test_archive_size_and_sha() -> None:
    new = base()
    new.template.archives["tar.gz"] = LockedArchive(
        file="t_1.0.0-1_amd64.tar.gz", sha256=NEW_SHA, size=211_078_758 + 98_304)
    assert text(base(), new) == [
        "tar.gz: size 201.3 MiB → 201.4 MiB (+96.0 KiB), sha256 0123456789ab… → fedcba987654…",
    ]


def test_template_version_release_and_new_archive_format() -> None:
    new = base()
    new.template.version = "1.1.0"
    new.template.release = 2
    new.template.archives["tar.zst"] = LockedArchive(file="t.tar.zst", sha256=NEW_SHA, size=500)
    new.template.definition = "9" * 32
    assert text(base(), new) == [
        "template: version 1.0.0 → 1.1.0",
        "template: release 1 → 2",
        "template: definition dddddddddddd… → 999999999999…",
        "tar.zst: + t.tar.zst (500 B, sha256 fedcba987654…)",
    ]


def test_whole_lock_added() -> None:
    lines = text(None, base())
    assert lines[0] == "template: + debian-12-stock-analysis 1.0.0-1 (amd64)"
    assert lines[1] == "tar.gz: + t_1.0.0-1_amd64.tar.gz (201.3 MiB, sha256 0123456789ab…)"
    assert lines[2] == "base-os: layer added (mmdebstrap, 0 source files, 2 artifacts, output " \
                       "aaaaaaaaaaaa…)"
    assert "base-os: + libbar 4.5" in lines


def test_size_text() -> None:
    assert size_text(0) == "0 B"
    assert size_text(1023) == "1023 B"
    assert size_text(1536) == "1.5 KiB"
    assert size_text(-98_304, signed=True) == "-96.0 KiB"
    assert size_text(5 * 1024**4) == "5.0 TiB"


# --- formats ---------------------------------------------------------------------------------


def _changed() -> Lockfile:
    new = base()
    new.layers["postgresql"].artifacts["packages"]["postgresql-15"] = pkg(
        "postgresql-15", "15.14~rc1|x", NEW_SHA)
    return new


def test_markdown_table_escapes_markup() -> None:
    out = render(diff(base(), _changed()), "markdown")
    assert out == (
        "| Where | Change |\n"
        "| --- | --- |\n"
        "| postgresql | postgresql-15 15.13-0+deb12u1 → 15.14\\~rc1\\|x |\n"
    )
    assert render([], "markdown") == "No changes to the lockfile.\n"


def test_json_is_the_list_of_changes() -> None:
    data = json.loads(render(diff(base(), _changed()), "json"))
    assert data == [{"kind": "artifact", "layer": "postgresql", "name": "postgresql-15",
                     "old": "15.13-0+deb12u1", "new": "15.14~rc1|x", "detail": ""}]


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="yaml"):
        render([], "yaml")


# --- git --------------------------------------------------------------------------------------

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


@needs_git
def test_load_side_from_head_and_working_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    rel = Path("locks/t.lock")
    assert load_side("HEAD", repo, rel) is None  # no commits yet
    toml.write(repo / rel, base())
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "lock")
    toml.write(repo / rel, _changed())

    old = load_side("HEAD", repo, rel)
    new = load_side(None, repo, rel)
    assert old == base()
    assert new == _changed()
    assert load_side("HEAD:locks/t.lock", repo, rel) == base()
    assert load_side(str(repo / rel), repo, Path("elsewhere.lock")) == _changed()
    assert load_side("HEAD", repo, Path("locks/other.lock")) is None  # not in that revision

    with pytest.raises(LockError, match="no-such-rev"):
        load_side("no-such-rev", repo, rel)


@needs_git
def test_load_side_reports_a_broken_lock_in_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "t.lock").write_text("lock_version = 99\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "x")
    with pytest.raises(LockError) as e:
        load_side("HEAD", repo, Path("t.lock"))
    assert e.value.file == "HEAD:t.lock"
    assert e.value.key == "lock_version"


def test_git_external_diff(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    toml.write(a, base())
    toml.write(b, _changed())
    out = git_external(["locks/t.lock", str(a), "1" * 40, "100644", str(b), "2" * 40, "100644"])
    assert out == ("lxclayer lock diff locks/t.lock\n"
                   "  postgresql: postgresql-15 15.13-0+deb12u1 → 15.14~rc1|x\n")
    added = git_external(["locks/t.lock", "/dev/null", ".", ".", str(b), "2" * 40, "100644"])
    assert "  template: + debian-12-stock-analysis 1.0.0-1 (amd64)\n" in added


def test_git_external_falls_back_to_a_plain_diff_for_a_broken_lock(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    toml.write(a, base())
    b.write_text(a.read_text().replace("lock_version = 1", "<<<<<<< ours"))
    out = git_external(["locks/t.lock", str(a), "1" * 40, "100644", str(b), "2" * 40, "100644"])
    assert out.startswith("lxclayer lock diff locks/t.lock: b/locks/t.lock: not valid TOML")
    assert "-lock_version = 1\n+<<<<<<< ours\n" in out


@needs_git
def test_git_uses_the_driver(tmp_path: Path) -> None:
    """The documented setup works: .gitattributes + diff.<driver>.command."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".gitattributes").write_text("locks/*.lock diff=lxclayer-lock\n")
    toml.write(repo / "locks/t.lock", base())
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "lock")
    toml.write(repo / "locks/t.lock", _changed())
    # the documented command (docs/lockfile.md), run by the interpreter that runs the tests:
    # a bare `python3` on PATH may lack lxclayer's dependencies
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_CONFIG_NOSYSTEM": "1"}
    command = f"{shlex.quote(sys.executable)} -m lxclayer lock diff --git"
    r = subprocess.run(["git", "-C", str(repo), "-c", f"diff.lxclayer-lock.command={command}", "diff", "--ext-diff"],
                       capture_output=True, env=env, text=True)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "postgresql: postgresql-15 15.13-0+deb12u1 → 15.14~rc1|x" in out



def test_host_tool_versions_and_empty_folders_are_shown():
    import msgspec

    old, new = base(), base()
    old.layers["base-os"] = msgspec.structs.replace(old.layers["base-os"], resolved={"tool mmdebstrap": "1.3.5-7"})
    new.layers["base-os"] = msgspec.structs.replace(new.layers["base-os"], resolved={"tool mmdebstrap": "1.4.0-1"})
    new.layers["redis-config"].sources["root/var/empty"] = "dir"
    lines = text(old, new)
    assert "base-os: tool mmdebstrap 1.3.5-7 → 1.4.0-1" in lines
    assert "redis-config: + folder root/var/empty" in lines


def test_plan_and_locked_name_a_changed_host_tool():
    from lxclayer.inputs import InputRecord, explain

    locked = LockedLayer(kind="mmdebstrap", builder="mmdebstrap/1", settings="c", input="i", output="o",
                         resolved={"tool mmdebstrap": "1.3.5-7", "tool apt": "2.6.1"})
    rec = InputRecord(kind="mmdebstrap", builder="mmdebstrap/1", settings="c", arch="amd64", source_date_epoch=1,
                      resolved={"tool mmdebstrap": "1.4.0-1", "tool apt": "2.6.1"})
    assert explain(rec, locked, None, []) == ["tool mmdebstrap 1.3.5-7 -> 1.4.0-1"]
