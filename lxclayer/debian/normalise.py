"""The reproducibility clean-up every Debian layer gets before it is scanned and stored.

Three kinds of things are taken out of a freshly built root file system:

- what differs between two builds of the same inputs: logs, caches, apt lists, the host's
  resolv.conf and hostname, random seeds, ldconfig's aux-cache, backup copies (mmdebstrap's list
  and more, see :data:`REMOVE`);
- per-instance identities, which every container made from the template would otherwise share:
  SSH host keys, the snakeoil TLS key and certificate, Erlang cookies, a PostgreSQL cluster made
  at package install time (see :data:`IDENTITIES`). The template makes them at first boot;
- nothing else. Byte-compiled Python files whose source will have its mtime clamped to
  SOURCE_DATE_EPOCH in the archive get the clamped mtime in their header, so that they stay
  valid (Python would otherwise find them stale and recompile them on every start).

Mtimes themselves are clamped by :func:`lxclayer.scan.scan_dir`.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
import struct
from collections.abc import Callable
from pathlib import Path

# Removed wherever they appear (globs relative to the root; `**` not supported, use REMOVE_TREES).
REMOVE = (
    # mmdebstrap's list
    "var/log/dpkg.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
    "var/log/alternatives.log",
    "var/cache/ldconfig/aux-cache",
    "var/lib/dbus/machine-id",  # only when it is a file, see below
    # more of the same kind
    "var/log/bootstrap.log",
    "var/log/cloud-init*.log",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
    "var/lib/urandom/random-seed",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    "var/lib/apt/lists/*_Packages*",
    "var/lib/apt/lists/*_Sources*",
    "var/lib/apt/lists/*_Translation-*",
    "var/lib/apt/lists/*Release*",
    "var/lib/apt/lists/*_Contents-*",
    "var/lib/apt/lists/*.diff_Index",
    "var/lib/apt/lists/partial/*",
    "var/lib/apt/lists/auxfiles",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/cache/man/index.db",
    "var/cache/man/*/index.db",
    "etc/ld.so.cache~",
    "etc/*-",  # passwd-, shadow-, group-, gshadow-: backups written by adduser/useradd
    "root/.wget-hsts",
    "root/.cache/pip",
    "root/.cache/uv",
    "root/.python_history",
    "root/.bash_history",
    "root/.lesshst",
    "root/.viminfo",
)
# Everything below these folders is removed, the folders themselves kept.
EMPTY_DIRS = ("tmp", "var/tmp", "run", "var/cache/fontconfig", "var/cache/private")

APT_PARTIAL = ("var/cache/apt/archives/partial", "var/lib/apt/lists/partial")

# Per-instance identities: made at first boot, never shipped in a template.
IDENTITIES = (
    "etc/ssh/ssh_host_*_key",
    "etc/ssh/ssh_host_*_key.pub",
    "etc/ssl/private/ssl-cert-snakeoil.key",
    "etc/ssl/certs/ssl-cert-snakeoil.pem",
    "var/lib/rabbitmq/.erlang.cookie",
    "root/.erlang.cookie",
)

PYC_HEADER = struct.Struct("<4sIII")  # magic, flags, mtime, source size


def _glob(root: Path, pattern: str) -> list[Path]:
    parent, _, name = pattern.rpartition("/")
    d = root / parent
    try:
        names = os.listdir(d)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [d / n for n in sorted(names) if fnmatch.fnmatchcase(n, name)]


def _rm(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def _real_dir(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink()


def normalise(
    root: Path,
    *,
    source_date_epoch: int,
    log: Callable[[str], None] = lambda m: None,
    base: bool = False,
    pycs_under: Path | None = None,
) -> list[str]:
    """Clean `root` in place; returns the paths it removed or changed (for the build log).

    `base`: the root file system was just made from nothing (mmdebstrap), so the files that
    mmdebstrap copies from the host are set to fixed contents; layers above restore the ones
    of the layers below instead (see :class:`lxclayer.debian.chroot.Chroot`).

    `pycs_under`: `root` is an overlay and this is its upper directory; only the byte-code
    files in it can need fixing (those below were fixed with their layer, and their sources'
    mtimes are clamped already), so only it is walked to find them."""
    done: list[str] = []

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    for pattern in REMOVE:
        for p in _glob(root, pattern):
            if pattern == "var/lib/dbus/machine-id" and p.is_symlink():
                continue
            _rm(p)
            done.append(rel(p))
    for d in EMPTY_DIRS:
        p = root / d
        if _real_dir(p):
            for child in sorted(p.iterdir()):
                _rm(child)
                done.append(rel(child))
    # Logs other than those removed: kept as empty files (the folder owners and modes matter to
    # the daemons that write them).
    logdir = root / "var/log"
    if _real_dir(logdir):
        for dirpath, _dirs, files in os.walk(logdir):
            for f in files:
                p = Path(dirpath) / f
                st = p.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_size:
                    os.truncate(p, 0)
                    done.append(rel(p))
    mid = root / "etc/machine-id"
    if mid.is_file() and not mid.is_symlink() and mid.stat().st_size:
        mid.write_bytes(b"")
        done.append(rel(mid))
    for pattern in IDENTITIES:
        for p in _glob(root, pattern):
            _rm(p)
            done.append(rel(p))
    # Hash links to the snakeoil certificate (named after its subject, i.e. the build host).
    certs = root / "etc/ssl/certs"
    if _real_dir(certs):
        for p in sorted(certs.iterdir()):
            if p.is_symlink() and os.readlink(p).endswith("ssl-cert-snakeoil.pem"):
                p.unlink()
                done.append(rel(p))
    done += _postgresql_clusters(root)
    if base:
        for name, data in (("etc/resolv.conf", b""), ("etc/hostname", b"localhost\n")):
            p = root / name
            if p.is_symlink() or p.exists():
                p.unlink()
            p.write_bytes(data)
            os.chmod(p, 0o644)
            if os.geteuid() == 0:
                os.chown(p, 0, 0)
            done.append(name)
        mid = root / "etc/machine-id"
        if not mid.exists() and not mid.is_symlink() and (root / "lib/systemd/systemd").exists():
            mid.write_bytes(b"")
            os.chmod(mid, 0o444)
        # mmdebstrap downloads with the host's apt, which gives its partial folders to the
        # *host's* _apt user if the host has one: root's, as on a host without one (apt in the
        # container hands them to its own _apt when it first runs).
        for name in APT_PARTIAL:
            p = root / name
            if _real_dir(p) and os.geteuid() == 0 and (p.stat().st_uid, p.stat().st_gid) != (0, 0):
                os.chown(p, 0, 0)
                done.append(name)
    done += fix_pycs(root, source_date_epoch, walk=pycs_under)
    if done:
        log(f"normalised {len(done)} paths")
    return done


def _postgresql_clusters(root: Path) -> list[str]:
    """Clusters made by postgresql-common's postinst (`pg_createcluster` at install time)."""
    out = []
    base = root / "var/lib/postgresql"
    if not _real_dir(base):
        return out
    for ver in sorted(base.iterdir()):
        if not _real_dir(ver):
            continue
        for cluster in sorted(ver.iterdir()):
            if (cluster / "PG_VERSION").is_file():
                shutil.rmtree(cluster)
                out.append(cluster.relative_to(root).as_posix())
                conf = root / "etc/postgresql" / ver.name / cluster.name
                if _real_dir(conf):
                    shutil.rmtree(conf)
                    out.append(conf.relative_to(root).as_posix())
                for logf in _glob(root, f"var/log/postgresql/postgresql-{ver.name}-{cluster.name}.log*"):
                    logf.unlink()
                    out.append(logf.relative_to(root).as_posix())
    return out


def fix_pycs(root: Path, source_date_epoch: int, walk: Path | None = None) -> list[str]:
    """Timestamp-based .pyc files record their source's mtime; the archive clamps that mtime to
    SOURCE_DATE_EPOCH, so record the clamped value too (hash-based .pyc files need nothing).
    Looks for them in `walk` (a folder whose paths are those of `root`), by default `root`."""
    out = []
    walk = walk or root
    skip = {walk / "proc", walk / "sys", walk / "dev"}
    for dirpath, dirs, files in os.walk(walk):
        wp = Path(dirpath)
        if wp in skip:
            dirs[:] = []
            continue
        if wp.name != "__pycache__":
            continue
        dp = root / wp.relative_to(walk)
        for f in files:
            if not f.endswith(".pyc") or (walk != root and not stat.S_ISREG(os.lstat(wp / f).st_mode)):
                continue  # (in an upper directory, a char device is a deleted file)
            p = dp / f
            stem = f.split(".", 1)[0]
            src = dp.parent / f"{stem}.py"
            try:
                sst = src.stat()
            except OSError:
                continue
            if int(sst.st_mtime) <= source_date_epoch or p.is_symlink():
                continue
            with open(p, "r+b") as fh:
                head = fh.read(PYC_HEADER.size)
                if len(head) < PYC_HEADER.size:
                    continue
                magic, flags, mtime, size = PYC_HEADER.unpack(head)
                if flags != 0 or mtime != (int(sst.st_mtime) & 0xFFFFFFFF):
                    continue
                fh.seek(0)
                fh.write(PYC_HEADER.pack(magic, flags, source_date_epoch & 0xFFFFFFFF, size))
            out.append(p.relative_to(root).as_posix())
    return out
