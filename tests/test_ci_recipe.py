"""The scheduled rebuild recipe: ci/scheduled-rebuild.sh and the example CI jobs that call it.
(Its --dry-run with a real security update is run by tests/test_pins_e2e.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_outdated import _lock_for, _project, archive  # noqa: F401 (a fixture)

yaml = pytest.importorskip("yaml")  # test-only dependency (pyproject: [test])
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "ci/scheduled-rebuild.sh"


def test_github_actions_example_runs_the_script_on_a_schedule():
    data = yaml.safe_load((ROOT / "ci/examples/github-actions.yml").read_text())
    on = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert on["schedule"][0]["cron"].split()[2:] == ["*", "*", "1"]
    runs = [s.get("run", "") for s in data["jobs"]["rebuild"]["steps"]]
    assert any("ci/scheduled-rebuild.sh" in r for r in runs)
    assert any("--body-file review/review.md" in r for r in runs)  # the review text is the PR's


def test_gitlab_example_runs_the_script_from_a_pipeline_schedule():
    data = yaml.safe_load((ROOT / "ci/examples/gitlab-ci.yml").read_text())
    job = data["scheduled-rebuild"]
    assert job["script"] == ["ci/scheduled-rebuild.sh"]
    assert {"if": '$CI_PIPELINE_SOURCE == "schedule"'} in job["rules"]
    assert {"locks/", "review/"} <= set(job["artifacts"]["paths"])


def _run(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, LXCLAYER=f"{sys.executable} -m lxclayer", PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(["sh", str(SCRIPT), *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=600)


def test_the_script_stops_at_once_when_no_security_update_is_out(tmp_path, archive):  # noqa: F811
    arc, srv = archive
    project = _project(tmp_path / "p", srv.url)
    _lock_for(project, arc.root, {"lxtiny": "1.0-1"})
    before = (project / "locks/tiny.lock").read_bytes()
    arc.add("debian", "stable", "lxtiny", "1.1-1")  # newer, not a security update: no rebuild
    r = _run(project, "--dry-run", env={"LXCLAYER_STORE": str(tmp_path / "store")})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "no security update for any pin; nothing to rebuild\n"
    assert (project / "locks/tiny.lock").read_bytes() == before
    assert (project / "review/outdated.json").read_text().strip() == '{"outdated":[]}'


def test_the_script_refuses_an_unknown_argument(tmp_path):
    r = _run(tmp_path, "--push-everything")
    assert r.returncode == 2
    assert "unknown argument --push-everything" in r.stderr
