"""The host tools' versions (part of an mmdebstrap layer's input) are asked of dpkg-query once
per state of dpkg's database: a no-op build starts no program, and an installed, removed or
upgraded package (dpkg replaces its status file) is seen at the next build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lxclayer.builders import mmdebstrap
from lxclayer.store import Store


@pytest.fixture
def dpkg(tmp_path: Path, monkeypatch):
    status = tmp_path / "status"
    status.write_text("Package: mmdebstrap\n")
    monkeypatch.setattr(mmdebstrap, "DPKG_STATUS", str(status))
    answers = {"version": "1.5.7-1"}
    asked = []

    def host_tool_versions():
        asked.append(1)
        return {"mmdebstrap": answers["version"], "dpkg": "1.22.21", "apt": "3.0.3"}

    monkeypatch.setattr(mmdebstrap, "host_tool_versions", host_tool_versions)
    return status, answers, asked


def replace(status: Path, text: str) -> None:
    """As dpkg does: a new file renamed over the old one."""
    new = status.with_name("status-new")
    new.write_text(text)
    os.replace(new, status)


def test_dpkg_is_asked_once_while_its_database_stays(dpkg, tmp_path):
    status, _, asked = dpkg
    store = Store(tmp_path / "store")
    first = mmdebstrap.kept_host_tool_versions(store)
    again = mmdebstrap.kept_host_tool_versions(Store(tmp_path / "store"))  # a later process
    assert first == again == {"mmdebstrap": "1.5.7-1", "dpkg": "1.22.21", "apt": "3.0.3"}
    assert len(asked) == 1


def test_an_upgrade_is_seen_at_the_next_build(dpkg, tmp_path):
    status, answers, asked = dpkg
    store = Store(tmp_path / "store")
    assert mmdebstrap.kept_host_tool_versions(store)["mmdebstrap"] == "1.5.7-1"
    answers["version"] = "1.5.8-1"
    replace(status, "Package: mmdebstrap\nVersion: 1.5.8-1\n")
    assert mmdebstrap.kept_host_tool_versions(store)["mmdebstrap"] == "1.5.8-1"
    assert len(asked) == 2


def test_without_dpkg_status_dpkg_query_is_asked_every_time(dpkg, tmp_path):
    status, _, asked = dpkg
    status.unlink()
    store = Store(tmp_path / "store")
    mmdebstrap.kept_host_tool_versions(store)
    mmdebstrap.kept_host_tool_versions(store)
    assert len(asked) == 2


def test_a_damaged_kept_answer_is_asked_again(dpkg, tmp_path):
    _, _, asked = dpkg
    store = Store(tmp_path / "store")
    mmdebstrap.kept_host_tool_versions(store)
    store.statcache_path("host-tools").write_bytes(b"\xc1 not msgpack")
    assert mmdebstrap.kept_host_tool_versions(store)["dpkg"] == "1.22.21"
    assert len(asked) == 2
