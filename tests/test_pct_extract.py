"""Our archive extracts with the exact tar flags of `pct create`, and passes `lxclayer check`."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from lxclayer.build import build
from lxclayer.definitions import load_project
from lxclayer.store import Store

from .conftest import run_cli
from .e2e_support import unavailable

PCT_FLAGS = ["--totals", "--one-file-system", "-p", "--sparse", "--numeric-owner", "--acls", "--xattrs",
             "--xattrs-include=user.*", "--xattrs-include=security.capability",
             "--warning=no-file-ignored", "--warning=no-xattr-write", "--skip-old-files", "--anchored",
             "--exclude", "./dev/*"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("tar"), reason="needs root (owners, capabilities) and GNU tar")
@pytest.mark.parametrize("fmt,flag", [("tar.gz", "-z"), ("tar.zst", "--zstd")])
def test_extracts_with_pct_flags(project_dir, store_dir, tmp_path, fmt, flag):
    if fmt == "tar.zst" and not shutil.which("zstd"):
        unavailable("zstd is not installed")
    res = build(load_project(project_dir), Store(store_dir), formats=[fmt])
    archive = res.archives[0].path
    root = tmp_path / "rootfs"
    root.mkdir()
    with open(archive, "rb") as f:
        r = subprocess.run(["tar", "xpf", "-", flag, *PCT_FLAGS, "-C", str(root)], stdin=f,
                           capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    conf = root / "etc" / "redis" / "redis.conf"
    st = conf.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 0, 101)
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert os.getxattr(root / "usr" / "bin" / "ping", "security.capability")
    assert os.readlink(root / "usr" / "bin" / "sh") == "dash"
    assert not (root / "dev" / "null").exists()  # pct leaves /dev to LXC
    assert not (root / "etc" / "obsolete.conf").exists()
    c = run_cli("check", str(archive))
    assert c.returncode == 0, c.stdout + c.stderr
