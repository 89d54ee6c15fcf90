"""The folder of one boot test, and the removal of everything a run made.

Each run gets `/var/tmp/lxclayer-bt-<id>/` (rootfs, private lxcpath, dnsmasq files) and uses
`<id>` in every name it creates (container `lxclayer-bt-<id>`, namespace `lxclayer-bt-<id>`,
interfaces `btb<id>`/`btc<id>`). An `owner` file names the process; a later run removes the
leftovers of runs whose process is gone (killed with SIGKILL, power cut), so nothing piles up.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .network import Names, netns_exists, teardown_names

BASE = Path("/var/tmp")
PREFIX = "lxclayer-bt-"
LXC_LOCK_DIR = Path("/run/lxc/lock")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime), counted after the closing parenthesis of the command name.
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass
class Workspace:
    run_id: str
    dir: Path

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.run_id}"

    @property
    def lxcpath(self) -> Path:
        return self.dir / "lxc"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def config(self) -> Path:
        return self.lxcpath / self.name / "config"

    @property
    def names(self) -> Names:
        return Names.for_run(self.run_id)

    @classmethod
    def create(cls, base: Path = BASE) -> Workspace:
        while True:
            run_id = secrets.token_hex(3)
            d = base / f"{PREFIX}{run_id}"
            if not netns_exists(f"{PREFIX}{run_id}"):
                try:
                    d.mkdir(mode=0o755)
                    break
                except FileExistsError:
                    continue
        os.chmod(d, 0o755)  # the container's root (uid 100000) must reach its rootfs
        pid = os.getpid()
        (d / "owner").write_text(f"{pid} {_proc_start_time(pid)}\n")
        ws = cls(run_id=run_id, dir=d)
        (ws.lxcpath / ws.name).mkdir(parents=True)
        return ws

    def owner_alive(self) -> bool:
        try:
            pid_s, start = (self.dir / "owner").read_text().split()
            pid = int(pid_s)
        except (OSError, ValueError):
            # No owner file: a run that died while creating its folder, or something else.
            try:
                return time.time() - self.dir.stat().st_mtime < 600
            except OSError:
                return False
        return _proc_start_time(pid) == start

    def remove(self) -> list[str]:
        """Stop the container and remove everything of this run. Never raises."""
        problems: list[str] = []
        if self.config.exists():
            problems += stop_container(self.name, self.lxcpath)
        problems += wait_lxc_processes(self.name)
        teardown_names(self.names, self.dir)
        remove_cgroups(self.name)
        remove_lxc_locks(self.lxcpath)
        problems += unmount_below(self.dir)
        problems += remove_tree(self.dir)
        return problems


def remove_tree(path: Path) -> list[str]:
    """rm -rf, staying on this file system (never into something mounted below)."""
    if not os.path.lexists(path):
        return []
    try:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False,
                       capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        pass
    if os.path.lexists(path):
        try:
            shutil.rmtree(path)
        except OSError as e:
            return [f"cannot remove {path}: {e}"]
    return []


def stop_container(name: str, lxcpath: Path) -> list[str]:
    def info() -> str:
        try:
            r = subprocess.run(["lxc-info", "-P", str(lxcpath), "-n", name, "-sH"],
                               capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return "UNKNOWN"
        return r.stdout.strip() or "UNKNOWN"

    if info() in ("STOPPED", "UNKNOWN"):
        return []
    try:
        subprocess.run(["lxc-stop", "-P", str(lxcpath), "-n", name, "-k"],
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if info() in ("STOPPED", "UNKNOWN"):
            return []
        time.sleep(0.2)
    return [f"container {name} did not stop"]


def lxc_processes(name: str) -> dict[int, str]:
    """LXC's processes for container `name`: its monitor, and hooks still running after it
    stopped (e.g. lxcfs's post-stop hook)."""
    found = {}
    me = {os.getpid(), os.getppid()}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) in me:
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if name in cmd.split() or cmd.startswith("[lxc monitor]") and cmd.endswith(f" {name}"):
            if cmd.startswith(("[lxc monitor]", "lxc-")) or "/usr/share/lxc" in cmd:
                found[int(p.name)] = cmd
    return found


def wait_lxc_processes(name: str, grace: float = 15) -> list[str]:
    """Let LXC's own processes for `name` finish (hooks run after the stop), then kill them."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not lxc_processes(name):
            return []
        time.sleep(0.1)
    left = lxc_processes(name)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.2)
    still = lxc_processes(name)
    return [f"process {pid} does not exit: {cmd}" for pid, cmd in still.items()]


def remove_cgroups(name: str) -> None:
    """Empty cgroups LXC may leave (lxc.payload.NAME, lxc.monitor.NAME) on every hierarchy."""
    if not CGROUP_ROOT.is_dir():
        return
    candidates: list[Path] = []
    for top in [CGROUP_ROOT, *[p for p in CGROUP_ROOT.iterdir() if p.is_dir()]]:
        for leaf in (f"lxc.payload.{name}", f"lxc.monitor.{name}"):
            p = top / leaf
            if p.is_dir():
                candidates.append(p)
    for c in candidates:
        dirs = sorted((p for p in c.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                      reverse=True)
        for d in [*dirs, c]:
            try:
                d.rmdir()
            except OSError:
                pass


def remove_lxc_locks(lxcpath: Path) -> None:
    lock = LXC_LOCK_DIR / str(lxcpath).lstrip("/")
    if lock.exists():
        shutil.rmtree(lock, ignore_errors=True)
    # Remove the now empty parents up to the lock dir (var/tmp/lxclayer-bt-ID).
    p = lock.parent
    while p != LXC_LOCK_DIR and LXC_LOCK_DIR in p.parents:
        if p.name.startswith(PREFIX):
            try:
                p.rmdir()
            except OSError:
                pass
        p = p.parent


def mounts_below(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp.startswith(prefix) or mp == str(path):
                    found.append(mp)
    except OSError:
        pass
    return found


def unmount_below(path: Path) -> list[str]:
    for mp in sorted(mounts_below(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)
    left = mounts_below(path)
    return [f"still mounted: {m}" for m in left]


def stale_workspaces(base: Path = BASE) -> list[Workspace]:
    found = []
    for d in sorted(base.glob(f"{PREFIX}*")):
        if not d.is_dir() or d.is_symlink():
            continue
        ws = Workspace(run_id=d.name[len(PREFIX):], dir=d)
        if not ws.owner_alive():
            found.append(ws)
    return found


def sweep_stale(base: Path = BASE) -> list[str]:
    """Remove what runs that died left behind. Returns the folders removed."""
    removed = []
    for ws in stale_workspaces(base):
        ws.remove()
        removed.append(str(ws.dir))
    return removed
