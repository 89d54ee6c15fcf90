"""The LXC config of the test container: what Proxmox VE generates for an unprivileged
Debian container with `nesting=1` (pve-container's update_lxc_config), pointed at our rootfs
and our network.

Differences from Proxmox, all deliberate:
- AppArmor: `generated` with nesting allowed where AppArmor is on (as PVE); `unconfined` where
  the kernel has no AppArmor (PVE hosts always have it).
- `lxc.cap.drop = sys_rawio`: systemd's sys-kernel-debug.mount needs CAP_SYS_RAWIO and then
  tries to mount debugfs, which no user namespace may do. Without the drop every Debian
  container here would end `degraded` for a reason that has nothing to do with the template.
- No memory, CPU or cgroup directory settings unless asked for; no hooks of PVE's own.
- Network: `phys` with the container end of our veth (PVE: a veth on vmbr0), or none.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path("/usr/share/lxc/config")
ID_MAP_LINES = ("lxc.idmap = u 0 100000 65536", "lxc.idmap = g 0 100000 65536")
NESTING_MOUNTS = (
    "lxc.mount.entry = proc dev/.lxc/proc proc create=dir,optional 0 0",
    "lxc.mount.entry = sys dev/.lxc/sys sysfs create=dir,optional 0 0",
)

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386",
         "ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64"}


def host_arch() -> str:
    m = platform.machine()
    return _ARCH.get(m, m)


def apparmor_enabled() -> bool:
    try:
        return Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"
    except OSError:
        return False


@dataclass
class LxcSettings:
    name: str
    hostname: str
    rootfs: Path
    # Container end of the veth pair, handed over with `phys`; None: loopback only.
    phys_link: str | None = None
    hwaddr: str | None = None
    arch: str = ""
    apparmor: bool = False
    memory_mb: int | None = None
    log_file: Path | None = None
    console_log: Path | None = None
    tty_count: int = 2


def config_text(s: LxcSettings) -> str:
    lines = [
        f"# lxclayer boot-test container {s.name}: like Proxmox VE's config for an",
        "# unprivileged Debian container with nesting=1",
        f"lxc.arch = {s.arch or host_arch()}",
        f"lxc.include = {CONFIG_DIR}/debian.common.conf",
        f"lxc.include = {CONFIG_DIR}/debian.userns.conf",
    ]
    if s.apparmor:
        lines += ["lxc.apparmor.profile = generated", "lxc.apparmor.allow_nesting = 1"]
    else:
        lines += ["lxc.apparmor.profile = unconfined"]
    lines += [
        # nesting=1 as the PVE web UI sets it
        *NESTING_MOUNTS,
        # unprivileged: /sys read-only but for what systemd needs (PVE: unless force_rw_sys)
        "lxc.mount.auto = sys:mixed",
        "lxc.monitor.unshare = 1",
        *ID_MAP_LINES,
        f"lxc.tty.max = {s.tty_count}",
        "lxc.environment = TERM=linux",
        f"lxc.uts.name = {s.hostname}",
        "lxc.cap.drop = sys_rawio",
    ]
    if s.memory_mb:
        b = s.memory_mb * 1024 * 1024
        if Path("/sys/fs/cgroup/memory").is_dir():
            lines += [f"lxc.cgroup.memory.limit_in_bytes = {b}",
                      f"lxc.cgroup.memory.memsw.limit_in_bytes = {b}"]
        else:
            lines += [f"lxc.cgroup2.memory.max = {b}", "lxc.cgroup2.memory.swap.max = 0"]
    lines.append(f"lxc.rootfs.path = dir:{s.rootfs}")
    if s.phys_link:
        lines += [
            "lxc.net.0.type = phys",
            f"lxc.net.0.link = {s.phys_link}",
            "lxc.net.0.name = eth0",
            "lxc.net.0.flags = up",
        ]
        if s.hwaddr:
            lines.append(f"lxc.net.0.hwaddr = {s.hwaddr}")
    else:
        lines += ["lxc.net.0.type = empty"]
    if s.log_file:
        lines += [f"lxc.log.file = {s.log_file}", "lxc.log.level = INFO"]
    if s.console_log:
        lines += [f"lxc.console.logfile = {s.console_log}"]
    lines.append("lxc.start.auto = 0")
    return "\n".join(lines) + "\n"
