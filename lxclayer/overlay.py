"""An overlay mount of snapshots, alive only while a build needs it and seen by nothing else.

Part of realisation (issue 11). A program layer runs on an overlayfs mount whose lower
directories are the snapshots of the layers below (see :mod:`lxclayer.snapshots`) and whose
upper directory is new: what the program changed is then exactly the upper directory.

The mount is made in a private mount namespace held open by one helper process (``unshare
--mount`` running ``cat`` on a pipe from lxclayer). Nothing is ever mounted in lxclayer's own
namespace, so the host's mount table never shows it, and the namespace (with the mount) goes
away when the helper ends: at the end of :class:`StackMount`, or when lxclayer dies by any
signal (the pipe closes, and the helper has SIGKILL as its parent-death signal).

Two ways into the merged tree:

- :attr:`StackMount.view`, ``/proc/<helper>/root/<mountpoint>``: a path this process (and the
  host tools it runs, such as dpkg-query) can read and write like any folder;
- :attr:`StackMount.enter`, an argv prefix (``nsenter --mount=...``) that runs a program in the
  helper's namespace, where the merged tree is at `mountpoint` itself (programs then unshare a
  namespace of their own from there, see :func:`lxclayer.debian.chroot.run_isolated`).

Mount options: ``redirect_dir=off,metacopy=off,index=off,xino=off``, so that the upper
directory holds whole files (a changed owner, mode or xattr copies the whole file up) and a
renamed directory is copied rather than redirected. The lower directories are named relative
to the snapshots folder, which keeps the option string short with many layers.

And ``volatile`` (Linux 5.10 and later; without it where the kernel refuses it): the unmount
at the end of every program layer then does not sync the whole file system of the upper
directory, which made each layer wait 0.2-0.3 s for the disk (docs/performance.md). Nothing
relies on that sync: the store makes durable what it keeps (entries are fsynced before they
are published), a snapshot is a cache checked before use, and the work directory, which
`volatile` marks as not to be mounted again, is new for every mount and removed after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from . import hermetic

OPTIONS = "redirect_dir=off,metacopy=off,index=off,xino=off"
READY = "lxclayer-overlay-ready"
FAILED = 97

_SCRIPT = f"""
cd "$1"
mount -t overlay lxclayer-snapshots -o "lowerdir=$2,upperdir=$3,workdir=$4,{OPTIONS},volatile" "$5" 2>/dev/null ||
  mount -t overlay lxclayer-snapshots -o "lowerdir=$2,upperdir=$3,workdir=$4,{OPTIONS}" "$5" 2>&1 || exit {FAILED}
echo "{READY} $$"
exec cat >/dev/null
"""


class OverlayUnavailable(Exception):
    """The overlay cannot be mounted here (no overlayfs, or a file system it cannot use)."""


class StackMount:
    """Mount `lowers` (top first, all below `base`) with `upper` at `mountpoint`; a context manager."""

    def __init__(self, base: Path, lowers: list[Path], upper: Path, work: Path, mountpoint: Path):
        self.base, self.lowers, self.upper, self.work, self.mountpoint = base, lowers, upper, work, mountpoint
        self._proc: subprocess.Popen | None = None
        self.pid = 0

    @property
    def view(self) -> Path:
        return Path(f"/proc/{self.pid}/root{self.mountpoint}")

    @property
    def enter(self) -> list[str]:
        return ["nsenter", f"--mount=/proc/{self.pid}/ns/mnt", "--"]

    def __enter__(self) -> StackMount:
        for d in (self.upper, self.work, self.mountpoint):
            d.mkdir(exist_ok=True)
        # `view` goes through /proc/<helper>/root, but a symlink met after it is followed from
        # *this* process's root, in this namespace, where nothing is mounted: with a store reached
        # through a symlink, the view would be the empty mount point, not the overlay. Real paths.
        self.mountpoint = Path(os.path.realpath(self.mountpoint))
        lowerdir = ":".join(os.path.relpath(p, self.base) for p in self.lowers)
        try:
            self._proc = hermetic.popen(
                ["unshare", "--mount", "--propagation", "private", "--fork", "--kill-child", "--", "/bin/sh", "-c", _SCRIPT, "sh",
                 str(self.base), lowerdir, str(self.upper), str(self.work), str(self.mountpoint)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except FileNotFoundError:
            raise OverlayUnavailable("unshare (util-linux) is not installed") from None
        assert self._proc.stdout is not None
        out = []
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith(READY + " "):
                self.pid = int(line.split()[1])
                self._check_view()
                return self
            out.append(line)
        rc = self._proc.wait()
        self._stop()
        why = next((ln for ln in reversed(out) if ln), f"exit code {rc}")
        raise OverlayUnavailable(why)

    def _check_view(self) -> None:
        """The view must be the overlay, not the folder it is mounted on as this namespace sees
        it (which happens when /proc shows another pid namespace than the helper's)."""
        try:
            same = os.stat(self.view).st_dev == os.stat(self.mountpoint).st_dev
        except OSError as e:
            same, why = True, e.strerror or str(e)
        else:
            why = f"{self.view} is not the overlay mounted in the helper's namespace"
        if same:
            self._stop()
            raise OverlayUnavailable(why)

    def __exit__(self, *exc) -> None:
        self._stop()

    def _stop(self) -> None:
        p, self._proc = self._proc, None
        if p is None:
            return
        with contextlib.suppress(OSError):
            if p.stdin:
                p.stdin.close()  # the helper's `cat` ends; the namespace and its mount go with it
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
        if p.stdout:
            p.stdout.close()
