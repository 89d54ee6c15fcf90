"""The command line as a user meets it: JSON output, lock diff in a git checkout, verify, help."""

from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import run_cli

ARCHIVE = "test-tpl_1.0-1_amd64.tar.gz"


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_build_json_names_archive_and_states(project_dir, store_dir):
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "build", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [x["state"] for x in doc["layers"]] == ["built", "built", "built"]
    assert doc["archives"][0]["path"].endswith(ARCHIVE)
    assert len(doc["archives"][0]["sha256"]) == 64
    again = json.loads(run_cli("--project", str(project_dir), "--store", str(store_dir), "build", "--json").stdout)
    assert [x["state"] for x in again["layers"]] == ["cached"] * 3
    assert again["archives"][0]["sha256"] == doc["archives"][0]["sha256"]


def test_human_build_output_ends_with_path_size_and_sha(project_dir, store_dir):
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "build")
    assert r.returncode == 0
    last = r.stdout.strip().splitlines()[0]
    assert last.startswith(str(project_dir / "dist" / ARCHIVE)) and "sha256 " in last
    assert "built    config" in r.stderr


def test_lock_diff_against_git_head(project_dir, store_dir):
    assert run_cli("--project", str(project_dir), "--store", str(store_dir), "build").returncode == 0
    git(project_dir, "init", "-q")
    git(project_dir, "add", "-A")
    git(project_dir, "commit", "-qm", "first")
    clean = run_cli("--project", str(project_dir), "lock", "diff")
    assert clean.returncode == 0, clean.stderr
    assert "no changes" in clean.stdout
    (project_dir / "layers" / "config" / "root" / "etc" / "motd").write_text("changed\n")
    assert run_cli("--project", str(project_dir), "--store", str(store_dir), "build").returncode == 0
    r = run_cli("--project", str(project_dir), "lock", "diff")
    assert r.returncode == 0, r.stderr
    assert "config: file root/etc/motd changed" in r.stdout
    md = run_cli("--project", str(project_dir), "lock", "diff", "--format", "markdown")
    assert "|" in md.stdout
    js = json.loads(run_cli("--project", str(project_dir), "lock", "diff", "--format", "json").stdout)
    assert any(c["kind"] == "source" and c["layer"] == "config" for c in js)


def test_verify_rebuild_says_reproducible(project_dir, store_dir):
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "verify", "--rebuild", "config", "extra")
    assert r.returncode == 0, r.stderr
    assert "config: reproducible" in r.stdout and "extra: reproducible" in r.stdout


def test_verify_rebuild_lists_what_differs(project_dir, store_dir, monkeypatch):
    from lxclayer.build import build
    from lxclayer.builders import files
    from lxclayer.definitions import load_project
    from lxclayer.manifest import Entry
    from lxclayer.store import Store
    from lxclayer.verify import verify_rebuild

    project = load_project(project_dir)
    build(project, Store(store_dir))
    real = files.realise

    def drifting(ctx):  # a builder that is not reproducible: one mode and one file differ
        res = real(ctx)
        out = []
        for e in res.entries:
            if e.path == "etc/motd":
                e = Entry(**{**{f: getattr(e, f) for f in e.__struct_fields__}, "mode": 0o600})
            out.append(e)
        out.append(Entry(path="etc/stamp", type="file", mode=0o644, size=0, hash=ctx.store.put_blob(b"")))
        res.entries = sorted(out, key=lambda e: e.path.split("/"))
        return res

    monkeypatch.setattr(files, "realise", drifting)
    diffs = verify_rebuild(project, Store(store_dir), ["config"])
    assert diffs == {"config": ["etc/motd: mode 0644 -> 0600", "etc/stamp: only in the rebuild"]}


@pytest.mark.parametrize("command", ["build", "plan", "lock", "lock diff", "check", "gc", "verify", "boot-test"])
def test_every_command_has_help_with_an_example(command):
    r = run_cli(*command.split(), "--help")
    assert r.returncode == 0
    assert "Example:" in r.stdout
