"""A host-only network like a Proxmox bridge with DHCP, without touching the host's network.

A network namespace of our own holds a bridge with a private /24 and dnsmasq serving DHCP only
(`--port=0`). A veth pair connects it to the container: one end is a port of that bridge, the
other stays in the host's namespace until LXC moves it into the container (`lxc.net.0.type =
phys`), where it becomes eth0. The namespace has no other interface and forwards nothing, so
nothing the container sends can leave this machine. LXC itself runs in the host's namespace.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NETNS_DIR = Path("/run/netns")
# Candidate /24s for the private range, never routed anywhere: it exists only inside the
# namespace we create. We still avoid ranges the host itself uses, to keep diagnostics clear.
CANDIDATE_POOL = ipaddress.ip_network("10.230.0.0/15")


@dataclass
class Names:
    netns: str
    bridge: str
    host_end: str        # bridge port, inside our namespace
    container_end: str   # given to the container (phys)

    @classmethod
    def for_run(cls, run_id: str) -> Names:
        # Interface names are at most 15 characters.
        return cls(netns=f"lxclayer-bt-{run_id}", bridge="br0",
                   host_end=f"btb{run_id}"[:15], container_end=f"btc{run_id}"[:15])


def host_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks the host has addresses or routes in."""
    nets: list[ipaddress.IPv4Network] = []
    for cmd in (["ip", "-j", "-4", "route", "show", "table", "all"], ["ip", "-j", "-4", "addr"]):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
            data = json.loads(out or "[]")
        except (OSError, ValueError, subprocess.SubprocessError):
            continue
        for entry in data:
            if "dst" in entry and entry["dst"] not in ("default",):
                try:
                    nets.append(ipaddress.ip_network(entry["dst"], strict=False))
                except ValueError:
                    pass
            for a in entry.get("addr_info", []):
                try:
                    nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
                except (KeyError, ValueError):
                    pass
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def choose_subnet(used: list[ipaddress.IPv4Network], rng: random.Random | None = None,
                  pool: ipaddress.IPv4Network = CANDIDATE_POOL) -> ipaddress.IPv4Network:
    rng = rng or random.Random()
    candidates = list(pool.subnets(new_prefix=24))
    rng.shuffle(candidates)
    for net in candidates:
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError(f"no free /24 in {pool}")


def dnsmasq_command(names: Names, subnet: ipaddress.IPv4Network, workdir: Path) -> list[str]:
    hosts = list(subnet.hosts())
    gateway = hosts[0]
    return [
        "nsenter", f"--net={NETNS_DIR / names.netns}", "--",
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
        f"--interface={names.bridge}", "--bind-interfaces", "--except-interface=lo",
        f"--dhcp-range={hosts[9]},{hosts[199]},{subnet.netmask},1h",
        f"--dhcp-option=option:router,{gateway}",
        "--dhcp-authoritative", "--no-hosts", "--no-resolv", "--no-ping",
        f"--dhcp-leasefile={workdir / 'dnsmasq.leases'}",
        f"--pid-file={workdir / 'dnsmasq.pid'}",
        f"--log-facility={workdir / 'dnsmasq.log'}", "--log-dhcp",
    ]


def random_mac(rng: random.Random | None = None) -> str:
    rng = rng or random.Random()
    # Locally administered, unicast; PVE uses BC:24:11 (its OUI), we do not pretend to.
    b = [0x02, 0x4C, 0x58] + [rng.randrange(256) for _ in range(3)]
    return ":".join(f"{x:02x}" for x in b)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


@dataclass
class PrivateNetwork:
    """The namespace, bridge, veth pair and dnsmasq of one run."""

    names: Names
    workdir: Path
    subnet: ipaddress.IPv4Network | None = None
    dnsmasq: subprocess.Popen | None = None
    created: list[str] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        assert self.subnet is not None
        return str(next(self.subnet.hosts()))

    def missing_tools(self) -> list[str]:
        return [t for t in ("ip", "nsenter", "dnsmasq") if not shutil.which(t)]

    def setup(self) -> None:
        """Create everything; raise RuntimeError (after undoing what was done) on failure."""
        try:
            self._setup()
        except BaseException:
            self.teardown()
            raise

    def _setup(self) -> None:
        n = self.names
        self.subnet = choose_subnet(host_networks())
        _ip("netns", "add", n.netns)
        self.created.append("netns")
        ns = ["-n", n.netns]
        _ip("link", "add", n.container_end, "type", "veth", "peer", "name", n.host_end,
            "netns", n.netns)
        self.created.append("veth")
        _ip(*ns, "link", "set", "lo", "up")
        _ip(*ns, "link", "add", n.bridge, "type", "bridge")
        _ip(*ns, "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", n.bridge)
        _ip(*ns, "link", "set", n.bridge, "up")
        _ip(*ns, "link", "set", n.host_end, "master", n.bridge)
        _ip(*ns, "link", "set", n.host_end, "up")
        log = open(self.workdir / "dnsmasq.out", "wb")
        with log:
            self.dnsmasq = subprocess.Popen(
                dnsmasq_command(n, self.subnet, self.workdir), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # dnsmasq reports configuration errors at once and exits.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.dnsmasq.poll() is not None:
                out = (self.workdir / "dnsmasq.out").read_text(errors="replace").strip()
                raise RuntimeError(f"dnsmasq exited ({self.dnsmasq.returncode}): {out[-300:]}")
            if (self.workdir / "dnsmasq.pid").exists():
                return
            time.sleep(0.05)
        raise RuntimeError("dnsmasq did not start within 5 s")

    def teardown(self) -> list[str]:
        """Remove everything of this run. Never raises; returns problems as text."""
        problems: list[str] = []
        if self.dnsmasq is not None:
            p = self.dnsmasq
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    try:
                        p.wait(5)
                    except subprocess.TimeoutExpired:
                        problems.append(f"dnsmasq (pid {p.pid}) does not exit")
            self.dnsmasq = None
        n = self.names
        if netns_exists(n.netns):
            r = _ip("netns", "del", n.netns, check=False)
            if r.returncode != 0:
                problems.append(f"ip netns del {n.netns}: {r.stderr.strip()}")
        # Deleting the namespace deletes the bridge port, and with it its peer; the peer may
        # also be back in the host's namespace after the container stopped.
        for _ in range(50):
            if not link_exists(n.container_end):
                break
            _ip("link", "del", n.container_end, check=False)
            time.sleep(0.1)
        if link_exists(n.container_end):
            problems.append(f"interface {n.container_end} is still there")
        return problems


def kill_pidfile_dnsmasq(pidfile: Path) -> None:
    """Stop a dnsmasq left by a run that died (pid file in its work folder)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if comm == "dnsmasq" and str(pidfile).encode() in cmdline:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def teardown_names(names: Names, workdir: Path) -> None:
    """Remove what a dead run may have left, knowing only its names and folder."""
    kill_pidfile_dnsmasq(workdir / "dnsmasq.pid")
    PrivateNetwork(names=names, workdir=workdir).teardown()
