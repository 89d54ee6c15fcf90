"""Run programs in a root file system, with nothing left mounted afterwards, whatever happens.

Every program runs under ``unshare --mount --pid --fork --kill-child``: its mounts (proc, sys,
a private /dev, bind mounts of the build's inputs) are made inside a private mount namespace,
and all its processes live in a private pid namespace. When the program ends, is interrupted
or lxclayer dies (even by SIGKILL: the namespace's first process gets SIGKILL when its parent
dies), the kernel tears the namespaces down and with them every mount and every daemon a
maintainer script may have started. The host's mount table never shows them. As a second
guard, :func:`sweep` unmounts anything found under the root afterwards.

:class:`Chroot` also sets up what a package installation in a chroot needs and takes it away
afterwards: a ``policy-rc.d`` that forbids starting services, and the host's resolv.conf while
(and only while) the program may use the network. The resolv.conf is bind-mounted read-only
over the tree's own inside the program's mount namespace (where the tree is mounted, on the
snapshot path the overlay): nothing of it is written into the tree, so nothing of it can reach
the layer, and a program without network sees the tree's own file.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import hermetic
from ..errors import BuildError
from ..progress.events import Program

POLICY_RC_D = b"#!/bin/sh\n# lxclayer: no service is started while a layer is built\nexit 101\n"
OVERLAY_UNAVAILABLE = "lxclayer: overlayfs is not available here"


def _unescape(s: str) -> str:
    return s.encode().decode("unicode_escape") if "\\" in s else s


def mounts_under(path: Path | str) -> list[str]:
    """Mount points at or below `path` in this process's mount namespace."""
    base = os.path.realpath(path).rstrip("/")
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            mp = _unescape(line.split()[4])
            if mp == base or mp.startswith(base + "/"):
                out.append(mp)
    return out


def sweep(path: Path | str, log: Callable[[str], None] = lambda m: None) -> None:
    """Unmount whatever is mounted at or below `path` (deepest first); lazy if busy."""
    for mp in sorted(set(mounts_under(path)), key=len, reverse=True):
        log(f"unmounting leftover {mp}")
        if hermetic.run(["umount", mp], capture_output=True).returncode != 0:
            hermetic.run(["umount", "-l", mp], capture_output=True)
    left = mounts_under(path)
    if left:
        raise BuildError(f"cannot unmount {left[0]}")


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """While building, SIGTERM unwinds like Ctrl-C does (so every `finally` runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@dataclass
class Output:
    returncode: int
    tail: list[str]  # the last lines of its output
    log_file: Path | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.tail)

    def full_text(self) -> str:
        """All of its output (from the log file), or the tail if there is none."""
        if self.log_file is not None and self.log_file.exists():
            return self.log_file.read_text("utf-8", "replace")
        return self.text


def run_isolated(
    setup: str,
    argv: list[str],
    *,
    env: dict[str, str],
    network: bool = True,
    log_file: Path | None = None,
    log: Callable[[str], None] = lambda m: None,
    stdin: bytes | None = None,
    keep: int = 400,
    enter: list[str] | None = None,
) -> Output:
    """Run `setup` (shell) and then exec `argv`, in fresh mount, pid and UTS namespaces (and a
    network namespace of its own unless `network`), with the process state of
    :mod:`lxclayer.hermetic`: `env` is added to its fixed environment, and the caller's proxy
    variables are passed only when `network` is on. `enter` is an argv prefix that puts the
    program in another mount namespace first (see :attr:`lxclayer.overlay.StackMount.enter`)."""
    # A private UTS namespace too: maintainer scripts that read the host name (for /etc/mailname,
    # certificates...) see "localhost", not the build machine's name.
    script = "set -e\nhostname localhost\n" + setup + "\nexec " + shlex.join(argv) + "\n"
    cmd = [*(enter or []), "unshare", "--mount", "--propagation", "private", "--uts", "--pid", "--fork", "--kill-child",
           "--mount-proc"]
    if not network:
        cmd.append("--net")
    cmd += ["--", "/bin/sh", "-c", script]
    prog = Program(argv, log)  # its command line, output lines and end: to the build's log (docs/progress.md)
    tail: deque[str] = deque(maxlen=keep)
    logf = open(log_file, "ab") if log_file else None  # noqa: SIM115
    try:
        proc = hermetic.popen(
            cmd, env=env, proxies=network, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
    except FileNotFoundError:
        if logf:
            logf.close()
        raise BuildError("unshare (util-linux) is not installed") from None
    try:
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        assert proc.stdout is not None
        for raw in proc.stdout:
            if logf:
                logf.write(raw)
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            prog.line(line)
        rc = proc.wait()
        prog.finished(rc)
    finally:
        if proc.poll() is None:
            proc.kill()  # unshare dies; --kill-child and PDEATHSIG take the namespace with it
            proc.wait()
        if logf:
            logf.close()
    return Output(returncode=rc, tail=list(tail), log_file=log_file)


DEV_SETUP = r"""
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys" 2>/dev/null || mount --rbind -o ro /sys "$R/sys"
mount -t tmpfs -o nosuid,mode=0755,size=65536k lxclayer-dev "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3
mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/full" c 1 7
mknod -m 666 "$R/dev/random" c 1 8
mknod -m 666 "$R/dev/urandom" c 1 9
mknod -m 666 "$R/dev/tty" c 5 0
mkdir -m 755 "$R/dev/pts"
mkdir -m 1777 "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
"""


@dataclass
class Bind:
    host: Path
    inside: str  # absolute path in the chroot
    readonly: bool = True


@dataclass
class Chroot:
    """A root file system prepared for running programs in it; use as a context manager."""

    root: Path
    workdir: Path  # for saved files and logs (outside `root`, same file system)
    binds: list[Bind] = field(default_factory=list)
    log: Callable[[str], None] = lambda m: None
    source_date_epoch: int | None = None
    # With a folder here, every run sees `root` through an overlay whose upper layer is in that
    # folder: `root` itself is not changed (used to resolve in the tree a build then reuses).
    overlay: Path | None = None
    # On a snapshot overlay (lxclayer.overlay.StackMount): `root` is its `view`, programs run
    # after `enter` and see the tree at `run_root`; nothing is mounted in this namespace.
    enter: list[str] = field(default_factory=list)
    run_root: Path | None = None
    seconds: float = 0.0  # time spent in the programs run
    _saved: dict[str, Path | None] = field(default_factory=dict)
    _made: list[Path] = field(default_factory=list)
    _resolv: Path | None = None  # the host's resolv.conf, copied for the runs with network
    _n: int = 0

    # --- set-up and tear-down ---------------------------------------------------------------

    def __enter__(self) -> Chroot:
        try:
            self._prepare()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if not self.enter:
                sweep(self.root, self.log)
        finally:
            self._restore()

    def _save(self, rel: str) -> None:
        """Move the chroot's `rel` aside (kept byte for byte, inode and all) for _restore."""
        p = self.root / rel
        if rel in self._saved:
            return
        if os.path.lexists(p):
            dest = self.workdir / f"saved-{len(self._saved)}"
            if self.enter:  # another file system: a copy with the same bytes and attributes
                _copy_entry(p, dest)
                os.unlink(p)
            else:
                os.rename(p, dest)
            self._saved[rel] = dest
        else:
            self._saved[rel] = None

    def _prepare(self) -> None:
        for d in ("proc", "sys", "dev", "run", "tmp"):
            p = self.root / d
            if not p.is_dir() and not p.is_symlink():
                p.mkdir(mode=0o755)
                self._made.append(p)
        sbin = self.root / "usr/sbin"
        if sbin.is_dir():
            self._save("usr/sbin/policy-rc.d")
            pol = sbin / "policy-rc.d"
            pol.write_bytes(POLICY_RC_D)
            os.chmod(pol, 0o755)
        # The host's resolv.conf as this process reads it now (the caller's mount namespace):
        # mounted over the tree's for each run with network (see run()).
        try:
            data = Path("/etc/resolv.conf").read_bytes()
        except OSError:
            data = b""
        self._resolv = self.workdir / f"resolv.conf.host-{os.getpid()}-{id(self)}"
        self._resolv.write_bytes(data)
        os.chmod(self._resolv, 0o644)  # apt's _apt user reads it
        for b in self.binds:
            mp = self.root / b.inside.lstrip("/")
            if not mp.exists():
                self._mkdirs(mp, file=b.host.is_file())

    def _mkdirs(self, mp: Path, file: bool) -> None:
        missing = []
        p = mp.parent if file else mp
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir()
            self._made.append(d)
        if file:
            mp.touch()
            self._made.append(mp)

    def _resolv_target(self) -> str:
        """The tree's resolv.conf, made a plain file to mount over if it is not one (a symlink,
        say to systemd-resolved's stub, or missing): then it is kept aside and put back at the end."""
        p = self.root / "etc/resolv.conf"
        try:
            plain = stat.S_ISREG(os.lstat(p).st_mode)
        except FileNotFoundError:
            plain = False
        if not plain:
            self._save("etc/resolv.conf")
            if not (self.root / "etc").is_dir():
                self._mkdirs(self.root / "etc", file=False)
            if not os.path.lexists(p):
                p.write_bytes(b"")
                os.chmod(p, 0o644)
        return str((self.run_root or self.root) / "etc/resolv.conf")

    def _restore(self) -> None:
        if self._resolv is not None:
            with contextlib.suppress(OSError):
                self._resolv.unlink()
            self._resolv = None
        for p in reversed(self._made):
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    p.rmdir()
                else:
                    p.unlink()
        self._made.clear()
        for rel, saved in self._saved.items():
            p = self.root / rel
            with contextlib.suppress(FileNotFoundError):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            if saved is not None:
                if self.enter:
                    _copy_entry(saved, p)
                    os.unlink(saved)
                else:
                    os.rename(saved, p)
        self._saved.clear()

    # --- running ----------------------------------------------------------------------------

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = hermetic.environment({"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"})
        if self.source_date_epoch is not None:
            env["SOURCE_DATE_EPOCH"] = str(self.source_date_epoch)
        env.update(extra or {})
        return env

    def run(
        self,
        argv: list[str],
        *,
        network: bool = False,
        env: dict[str, str] | None = None,
        what: str = "",
        stdin: bytes | None = None,
    ) -> Output:
        """Run `argv` in the chroot. Does not raise on failure: check `returncode`."""
        self._n += 1
        setup = f"R={shlex.quote(str(self.run_root or self.root))}\n"
        if self.overlay is not None:
            ov = shlex.quote(str(self.overlay))
            setup += (f"mkdir -p {ov}/upper {ov}/work\n"
                      f"mount -t overlay lxclayer-overlay -o lowerdir=\"$R\",upperdir={ov}/upper,workdir={ov}/work \"$R\""
                      f" || {{ echo '{OVERLAY_UNAVAILABLE}'; exit 97; }}\n")
        setup += DEV_SETUP
        for b in self.binds:
            target = shlex.quote(str((self.run_root or self.root) / b.inside.lstrip("/")))
            setup += f"mount --bind {shlex.quote(str(b.host))} {target}\n"
            if b.readonly:
                setup += f"mount -o remount,bind,ro {target}\n"
        if network and self._resolv is not None:
            target = shlex.quote(self._resolv_target())
            setup += (f"mount --bind {shlex.quote(str(self._resolv))} {target}\n"
                      f"mount -o remount,bind,ro {target}\n")
        log_file = self.workdir / f"chroot-{self._n}-{what or 'run'}.log"
        if not Path("/usr/sbin/chroot").exists():
            raise BuildError("chroot (coreutils) is not installed")
        t = time.monotonic()
        try:
            return run_isolated(
                setup, ["/usr/sbin/chroot", str(self.run_root or self.root), *argv], env=self.env(env),
                network=network, log_file=log_file, log=self.log, stdin=stdin, enter=self.enter,
            )
        finally:
            self.seconds += time.monotonic() - t


def _copy_entry(src: Path, dest: Path) -> None:
    """Copy a file or symlink with its owner, mode, xattrs (but overlayfs's own) and mtime."""
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dest)
    elif stat.S_ISREG(st.st_mode):
        with open(src, "rb") as fi, open(dest, "xb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
    else:
        raise BuildError(f"{src.name} in the build's root is a {stat.filemode(st.st_mode)[0]}, not a file or a link")
    os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dest, stat.S_IMODE(st.st_mode))
        for name in os.listxattr(src, follow_symlinks=False):
            if not name.startswith("trusted.overlay."):
                os.setxattr(dest, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
