"""Shared fixtures: a small project with an import layer and two files layers."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

SDE = 1700000000
# VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_RAW (bit 13): what `setcap cap_net_raw+ep` writes.
CAP_NET_RAW = "\x01\x00\x00\x02" + "\x00\x20\x00\x00" + "\x00" * 12

TEMPLATE = """\
name = "test-tpl"
version = "1.0"
release = 1
arch = "amd64"
formats = ["tar.gz"]
source_date_epoch = 1700000000
layers = ["base", "config", "extra"]
"""


def base_tarball(size_mb: int = 0) -> bytes:
    """A small root file system: what an imported Debian tarball looks like, in miniature."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(name, type_=tarfile.DIRTYPE, mode=0o755, data=b"", uid=0, gid=0, **kw):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = type_, mode, uid, gid, 1600000000
            for k, v in kw.items():
                setattr(ti, k, v)
            if type_ == tarfile.REGTYPE:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
        add("./")
        for d in ("etc", "usr", "usr/bin", "var", "var/lib", "dev"):
            add(f"./{d}")
        add("./tmp", mode=0o1777)
        add("./etc/redis", mode=0o2750, uid=0, gid=101)
        add("./etc/passwd", tarfile.REGTYPE, 0o644,
            b"root:x:0:0:root:/root:/bin/sh\nredis:x:101:101::/var/lib/redis:/usr/sbin/nologin\n")
        add("./etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nredis:x:101:\n")
        add("./etc/obsolete.conf", tarfile.REGTYPE, 0o644, b"old\n")
        add("./usr/bin/ping", tarfile.REGTYPE, 0o755, b"\x7fELF fake ping\n",
            pax_headers={"SCHILY.xattr.security.capability": CAP_NET_RAW})
        add("./usr/bin/sh", tarfile.SYMTYPE, 0o777, linkname="dash")
        add("./usr/bin/dash", tarfile.REGTYPE, 0o755, b"fake dash\n")
        add("./dev/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3)
        if size_mb:
            add("./var/lib/big", mode=0o755)
            for i in range(size_mb):
                add(f"./var/lib/big/f{i:04d}", tarfile.REGTYPE, 0o644,
                    hashlib.sha256(str(i).encode()).digest() * (1 << 15))
    return buf.getvalue()


def write_project(root: Path, size_mb: int = 0) -> Path:
    layers = root / "layers"
    (layers / "base").mkdir(parents=True)
    tar = base_tarball(size_mb)
    (layers / "base" / "base.tar").write_bytes(tar)
    (layers / "template.toml").write_text(TEMPLATE)
    (layers / "base" / "layer.toml").write_text(textwrap.dedent(f"""\
        kind = "import"
        description = "a tiny root file system"
        path = "base.tar"
        sha256 = "{hashlib.sha256(tar).hexdigest()}"
        """))
    cfg = layers / "config"
    (cfg / "root" / "etc" / "redis").mkdir(parents=True)
    (cfg / "root" / "etc" / "redis" / "redis.conf").write_text("port 6379\nbind 127.0.0.1\n")
    (cfg / "root" / "etc" / "motd").write_text("hello\n")
    (cfg / "root" / "usr" / "local" / "bin").mkdir(parents=True)
    (cfg / "root" / "usr" / "local" / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (cfg / "layer.toml").write_text(textwrap.dedent("""\
        kind = "files"
        requires = ["base"]

        [[modes]]
        path = "etc/redis/*.conf"
        mode = "0640"
        group = "redis"

        [[modes]]
        path = "usr/local/bin/*"
        mode = "0755"
        """))
    extra = layers / "extra"
    (extra / "root" / "etc").mkdir(parents=True)
    (extra / "root" / "etc" / "extra.conf").write_text("extra = 1\n")
    (extra / "layer.toml").write_text(textwrap.dedent("""\
        kind = "files"
        delete = ["etc/obsolete.conf"]

        [symlinks]
        "etc/systemd/system/multi-user.target.wants/redis.service" = "/lib/systemd/system/redis.service"
        """))
    (root / "locks").mkdir()
    return root


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj")


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, umask: int | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `lxclayer` as a user would: a separate process, exit code and output captured."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + full_env.get("PYTHONPATH", "")
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "lxclayer", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout, preexec_fn=preexec)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """The one place that decides skip or fail: under LXCLAYER_REQUIRE_E2E=1 (CI) any skip, from
    `pytest.skip`, a `skipif` mark or `e2e_support.unavailable`, is a failure, so that a test
    cannot pass the gate by not running."""
    outcome = yield
    rep = outcome.get_result()
    from .e2e_support import e2e_required

    if rep.skipped and e2e_required() and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped under LXCLAYER_REQUIRE_E2E=1, which makes a skip a failure: {reason}"


# --- Two workers in CI (.ci/run: pytest -n 2) --------------------------------------------------
# With pytest-xdist, each test module is one unit of work, so that a module's tests keep their
# order and its module- and session-scoped fixtures (a registry, a cold build, an mmdebstrap root)
# are made once, on one worker. The journeys (tests/journeys/, four modules) are one unit: they
# share the session build of both templates (journeys/conftest.py's `warm`). xdist queues the
# units with the most tests first, so the journeys (the longest unit) start at once on one
# worker while the other works through the rest; tests/test_e2e_template.py builds the same
# templates into the session's store, and the store's per-layer locks make a second builder of
# a layer wait for the first and find it cached, so no layer is built twice whatever the order.
# Without -n (`./dev test`), nothing here applies. (xdist's own `--dist loadgroup` marks do not
# group under pytest 9: the nodeid suffix they rely on is lost.)


def _unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "journeys" if path.startswith("tests/journeys/") else path


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown without it (-p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return ByModule(config, log)
