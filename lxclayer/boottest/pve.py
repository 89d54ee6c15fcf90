"""What Proxmox VE writes into a container at `pct create` and at every start.

Follows pve-container's PVE::LXC::Setup::Base and ::Debian for an unprivileged Debian
container with one network device `eth0` on DHCP (or none), no password and no SSH keys given:

- at create: remove `/etc/machine-id` (and `/var/lib/dbus/machine-id` unless it is a link), so
  the first start is systemd's first boot; lock root's password; randomise the minutes of
  root's cron lines; generate SSH host keys when `/etc/ssh` exists;
- at create and every start: `/etc/network/interfaces`, `/etc/hostname`, a marked block in
  `/etc/hosts`, `/etc/resolv.conf`, the container-getty unit's tty names, and on Debian 12+
  `/etc/systemd/system-preset/00-pve.preset`; `/fastboot` at start.

A file is left alone when `/etc/.pve-ignore.NAME` (beside it) exists. The pure functions build
file contents; :func:`apply_create` and :func:`apply_start` write them through :class:`RootFS`.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .rootfs import RootFS

PVE_HEAD = "# --- BEGIN PVE ---\n"
PVE_TAIL = "# --- END PVE ---\n"

PRESET_PATH = "/etc/systemd/system-preset/00-pve.preset"
PRESET_TEXT = (
    "# Added by PVE at create-time for first-boot configuration.\n"
    "enable container-getty@.service\n"
    "disable getty@.service\n"
    "disable sys-kernel-config.mount\n"
    "disable sys-kernel-debug.mount\n"
    "disable systemd-networkd.service\n"
)

SSH_KEY_TYPES = ("rsa", "ecdsa", "ed25519")


@dataclass
class Settings:
    """The parts of a PVE container config that decide what gets written."""

    hostname: str
    # True: net0 is name=eth0,ip=dhcp. False: the container has no network device.
    dhcp: bool = True
    nameservers: list[str] = field(default_factory=list)
    searchdomain: str | None = None
    tty_count: int = 2


# -- file contents (pure) ----------------------------------------------------------------
def interfaces_text(dhcp: bool) -> str:
    """`/etc/network/interfaces` as PVE::LXC::Setup::Debian writes it for a new container."""
    text = "auto lo\niface lo inet loopback\n"
    if dhcp:
        text += "\nauto eth0\niface eth0 inet dhcp\n"
    return text


def hostname_text(hostname: str) -> str:
    return hostname.split(".", 1)[0] + "\n"


def remove_pve_sections(data: str) -> str:
    return re.sub(
        r"^[ \t]*" + re.escape(PVE_HEAD.rstrip("\n")) + r".*?^[ \t]*"
        + re.escape(PVE_TAIL.rstrip("\n")) + r"[^\n]*$",
        "",
        data,
        flags=re.M | re.S,
    )


def modify_marked(old: str | None, data: str, *, how: str = "append") -> str | None:
    """PVE's ct_modify_file: put `data` between the PVE markers of a file's text.

    `old` is the current text (None when the file does not exist); `how` is what to do when
    there is no marked section yet: "append", "prepend" or "replace". Returns the new text, or
    None when the file is to be left as it is."""
    if data and not data.endswith("\n"):
        data += "\n"
    if old is None:
        return PVE_HEAD + data + PVE_TAIL if data else None
    lines = old.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    beg = end = None
    for i, line in enumerate(lines):
        if beg is None and re.match(r"^#\s*---\s*BEGIN\s*PVE\s*", line):
            beg = i
        if end is None and beg is not None and re.match(r"^#\s*---\s*END\s*PVE\s*", line, re.I):
            end = i
        if beg is not None and end is not None:
            break
    if beg is not None and end is not None:
        lines[beg : end + 1] = [PVE_HEAD + data + PVE_TAIL.rstrip("\n")]
        return "\n".join(lines) + "\n"
    if not data:
        return None
    content = "\n".join(lines).rstrip("\n") + "\n"
    block = PVE_HEAD + data + PVE_TAIL
    if how == "replace":
        return block
    if how == "prepend":
        return block + content
    return content + block


def hosts_text(old: str | None, hostname: str, searchdomain: str | None = None,
               hostip: str | None = None) -> str | None:
    """`/etc/hosts` after PVE's update_etc_hosts (with DHCP there is no fixed address, so the
    name goes on 127.0.1.1)."""
    namepart = hostname.split(".", 1)[0]
    if "." in hostname:
        all_names = f"{hostname} {namepart}"
    else:
        names = [f"{hostname}.{d}" for d in (searchdomain or "").split() if d]
        all_names = " ".join(names + [hostname])
    lo4 = "127.0.0.1 localhost.localnet localhost\n"
    lo6 = "::1 localhost.localnet localhost\n"
    section = ""
    if old is not None:
        rest = remove_pve_sections(old)
        if not re.search(r"^[ \t]*127\.0\.0\.1[ \t]+", rest, re.M):
            section += lo4
        if not re.search(r"^[ \t]*::1[ \t]+", rest, re.M):
            section += lo6
    else:
        section += lo4 + lo6
    section += f"{hostip} {all_names}\n" if hostip else f"127.0.1.1 {namepart}\n"
    return modify_marked(old, section)


def resolv_text(old: str | None, nameservers: list[str], searchdomain: str | None) -> str | None:
    data = ""
    if searchdomain:
        data += "search " + " ".join(searchdomain.split()) + "\n"
    for ns in nameservers:
        data += f"nameserver {ns}\n"
    return modify_marked(old, data, how="replace")


def locked_password_text(text: str, user: str, *, shadow: bool, today: int) -> str:
    """Set `user`'s password to `*` (PVE's default when no password is given)."""
    out = []
    for line in text.splitlines(keepends=True):
        if shadow:
            line = re.sub(rf"^{re.escape(user)}:[^:]*:[^:]*:", f"{user}:*:{today}:", line)
        else:
            line = re.sub(rf"^{re.escape(user)}:[^:]*:", f"{user}:x:", line)
        out.append(line)
    return "".join(out)


def randomized_crontab_text(text: str, rng: random.Random) -> str:
    """Root's cron lines get a random minute, as PVE does."""
    out = []
    for line in text.split("\n"):
        m = re.match(r"^\d+(\s+\S+\s+\S+\s+\S+\s+\S+\s+root\s+\S.*)$", line)
        out.append(f"{int(rng.random() * 59)}{m.group(1)}" if m else line)
    result = "\n".join(out)
    return result if result.endswith("\n") else result + "\n"


def container_getty_text(text: str, unprivileged: bool = True) -> str:
    """PVE points container-getty@.service at /dev/ttyN (unprivileged: no lxc/ tty dir)."""
    ttyname = ("" if unprivileged else "lxc/") + "tty%I"
    return re.sub(r"pts/%I|lxc/tty%I", ttyname, text)


def debian_major(debian_version: str | None) -> int | None:
    """12 for "12.12"; a large number for testing/unstable ("trixie/sid"); None if unknown."""
    if not debian_version:
        return None
    v = debian_version.strip()
    m = re.match(r"^(\d+)", v)
    if m:
        return int(m.group(1))
    if "/sid" in v or v.endswith("sid"):
        return 99
    return None


# -- applying ----------------------------------------------------------------------------
def _systemd_dir(fs: RootFS) -> str:
    return "/lib/systemd/system" if fs.is_executable("/lib/systemd/systemd") else "/usr/lib/systemd/system"


def uses_systemd(fs: RootFS) -> bool:
    return fs.is_executable("/lib/systemd/systemd") or fs.is_executable("/usr/lib/systemd/systemd")


def clear_machine_id(fs: RootFS) -> list[str]:
    removed = []
    if fs.is_file("/var/lib/dbus/machine-id") and not fs.is_symlink("/var/lib/dbus/machine-id") \
            and uses_systemd(fs):
        if fs.unlink("/var/lib/dbus/machine-id"):
            removed.append("/var/lib/dbus/machine-id")
    if fs.is_file("/etc/machine-id") and fs.unlink("/etc/machine-id"):
        removed.append("/etc/machine-id")
    return removed


def _generate_ssh_keys(fs: RootFS, hostname: str) -> list[str]:
    if not fs.is_dir("/etc/ssh") or not shutil.which("ssh-keygen"):
        return []
    written = []
    with tempfile.TemporaryDirectory(prefix="lxclayer-bt-ssh-") as tmp:
        for kind in SSH_KEY_TYPES:
            name = f"ssh_host_{kind}_key"
            key = Path(tmp) / name
            subprocess.run(
                ["ssh-keygen", "-q", "-f", str(key), "-t", kind, "-N", "", "-C", f"root@{hostname}"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if fs.write_text(f"/etc/ssh/{name}", key.read_text(), 0o600):
                written.append(f"/etc/ssh/{name}")
            fs.write_text(f"/etc/ssh/{name}.pub", (Path(tmp) / f"{name}.pub").read_text(), 0o644)
    return written


def apply_create(fs: RootFS, settings: Settings, *, rng: random.Random | None = None) -> list[str]:
    """What `pct create` does after unpacking (post_create_hook). Returns notes."""
    rng = rng or random.Random()
    notes: list[str] = []
    for path in clear_machine_id(fs):
        notes.append(f"removed {path}")
    # Root cron lines get random minutes.
    cron_files = ["/etc/crontab"] if fs.is_file("/etc/crontab") else []
    crond = fs.resolve("/etc/cron.d")
    if crond.is_dir():
        cron_files += [f"/etc/cron.d/{p.name}" for p in sorted(crond.iterdir())
                       if re.fullmatch(r"[A-Z\-_a-z0-9]+", p.name) and fs.is_file(f"/etc/cron.d/{p.name}")]
    for path in cron_files:
        text = fs.read_text(path)
        if text is not None:
            fs.write_text(path, randomized_crontab_text(text, rng))
    # Root's password is locked ('*') when none is given.
    today = int(time.time() // 86400)
    if fs.is_file("/etc/passwd"):
        if fs.is_file("/etc/shadow"):
            fs.write_text("/etc/shadow", locked_password_text(
                fs.read_text("/etc/shadow") or "", "root", shadow=True, today=today), 0o640,
                preserve=True)
            fs.write_text("/etc/passwd", locked_password_text(
                fs.read_text("/etc/passwd") or "", "root", shadow=False, today=today),
                preserve=True)
    if _generate_ssh_keys(fs, settings.hostname):
        notes.append("generated SSH host keys")
    return notes


def apply_start(fs: RootFS, settings: Settings) -> list[str]:
    """What PVE writes at create (after :func:`apply_create`) and again before every start."""
    notes: list[str] = []
    fs.write_text("/fastboot", "")
    # setup_init (Debian with systemd)
    if uses_systemd(fs):
        getty = f"{_systemd_dir(fs)}/container-getty@.service"
        text = fs.read_text(getty)
        if text is not None:
            new = container_getty_text(text)
            if new != text:
                fs.write_text(getty, new)
        major = debian_major(fs.read_text("/etc/debian_version"))
        if major is not None and major >= 12:
            fs.write_text(PRESET_PATH, PRESET_TEXT)
    # setup_network
    fs.write_text("/etc/network/interfaces", interfaces_text(settings.dhcp))
    # set_hostname
    hosts = hosts_text(fs.read_text("/etc/hosts"), settings.hostname, settings.searchdomain)
    if hosts is not None:
        fs.write_text("/etc/hosts", hosts)
    fs.write_text("/etc/hostname", hostname_text(settings.hostname))
    # set_dns
    resolv = resolv_text(fs.read_text("/etc/resolv.conf"), settings.nameservers, settings.searchdomain)
    if resolv is not None:
        fs.write_text("/etc/resolv.conf", resolv)
    return notes
