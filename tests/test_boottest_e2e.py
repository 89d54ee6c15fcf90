"""End-to-end boot tests: a small Debian 12 root file system made with mmdebstrap, unpacked and
booted the way Proxmox VE would, with passing and failing checks, a broken unit, a fault, a
boot that never finishes, unpack errors, and proof that nothing is left behind (also after
Ctrl-C and SIGTERM).

Needs root, lxc, uidmap, mmdebstrap, dnsmasq and iproute2; skipped with a reason without them,
a failure under LXCLAYER_REQUIRE_E2E=1. The root file system is cached in /var/tmp.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import msgspec
import pytest

from lxclayer.boottest.report import Report
from lxclayer.boottest.run import boot_test
from lxclayer.boottest.spec import Check, Fault
from lxclayer.errors import ArchiveError

from .e2e_support import require_lxc_guest_configs, require_root, require_tools

pytestmark = pytest.mark.e2e

CACHE = Path("/var/tmp/lxclayer-test-cache")
MMDEBSTRAP_ARGS = [
    "--variant=minbase", "--include=systemd,systemd-sysv,ifupdown,isc-dhcp-client,iproute2,python3",
    "bookworm",
]
TOOLS = ("lxc-start", "lxc-attach", "lxc-usernsexec", "newuidmap", "mmdebstrap", "dnsmasq", "ip",
         "nsenter", "gzip")

WEB_UNIT = """\
[Unit]
Description=lxclayer test web server

[Service]
ExecStart=/usr/bin/python3 -m http.server 8080 --bind 127.0.0.1 --directory /srv/www

[Install]
WantedBy=multi-user.target
"""
BROKEN_UNIT = """\
[Unit]
Description=A unit that always fails

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo lxclayer-broken is about to fail; exit 7'

[Install]
WantedBy=multi-user.target
"""
HANGING_UNIT = """\
[Unit]
Description=A unit that never finishes starting

[Service]
Type=oneshot
ExecStart=/bin/sleep 3600

[Install]
WantedBy=multi-user.target
"""
HEALTH = {"status": "ok", "checks": {"db": {"ok": True}, "cache": {"ok": True}}}


def _require():
    require_root()
    require_tools(*TOOLS)
    require_lxc_guest_configs()


@pytest.fixture(scope="session")
def base_tar() -> Path:
    """bookworm minbase + systemd + ifupdown + DHCP client + python3, as an uncompressed tar
    with ./-prefixed members; built once and kept in /var/tmp."""
    _require()
    key = hashlib.sha256(json.dumps(MMDEBSTRAP_ARGS).encode()).hexdigest()[:12]
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / f"bookworm-minbase-{key}.tar"
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            tmp = target.with_suffix(".tmp.tar")
            proc = subprocess.run(["mmdebstrap", "--quiet", *MMDEBSTRAP_ARGS, str(tmp)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                pytest.fail(f"mmdebstrap failed: {proc.stderr[-2000:]}")
            tmp.rename(target)
    return target


def make_variant(base: Path, out: Path, files: dict[str, str], links: dict[str, str] | None = None,
                 dirs: tuple[str, ...] = ()) -> Path:
    """`base` plus files/links appended (new paths only: the first entry of a path wins),
    compressed according to `out`'s name."""
    plain = out.with_name(out.name.split(".tar")[0] + ".tar")
    shutil.copyfile(base, plain)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        def info(name, type_, mode, size=0):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.size, ti.mtime = type_, mode, size, 1700000000
            return ti
        for d in dirs:
            tf.addfile(info(d, tarfile.DIRTYPE, 0o755))
        for name, text in files.items():
            data = text.encode()
            tf.addfile(info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
        for name, target in (links or {}).items():
            ti = info(name, tarfile.SYMTYPE, 0o777)
            ti.linkname = target
            tf.addfile(ti)
    extra = tarfile.open(fileobj=io.BytesIO(buf.getvalue()))
    with tarfile.open(plain, "a") as tf:
        for m in extra.getmembers():
            tf.addfile(m, extra.extractfile(m) if m.isreg() else None)
    if out.name.endswith(".tar.gz"):
        subprocess.run(["gzip", "-1", "-f", str(plain)], check=True)
        plain.with_name(plain.name + ".gz").rename(out)
    elif out.name.endswith(".tar.zst"):
        import zstandard

        with open(plain, "rb") as src, open(out, "wb") as dst:
            zstandard.ZstdCompressor(level=1, threads=-1).copy_stream(src, dst)
        plain.unlink()
    return out


def web_files() -> tuple[dict[str, str], dict[str, str], tuple[str, ...]]:
    files = {
        "./etc/systemd/system/lxclayer-web.service": WEB_UNIT,
        "./srv/www/health": json.dumps(HEALTH),
    }
    links = {"./etc/systemd/system/multi-user.target.wants/lxclayer-web.service":
             "/etc/systemd/system/lxclayer-web.service"}
    return files, links, ("./srv/www",)


@pytest.fixture(scope="session")
def good_archive(base_tar, tmp_path_factory) -> Path:
    files, links, dirs = web_files()
    out = tmp_path_factory.mktemp("bt") / "debian-12-btgood_1-1_amd64.tar.zst"
    return make_variant(base_tar, out, files, links, dirs)


@pytest.fixture(scope="session")
def broken_archive(base_tar, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bt") / "debian-12-btbroken_1-1_amd64.tar.gz"
    return make_variant(base_tar, out, {"./etc/systemd/system/lxclayer-broken.service": BROKEN_UNIT},
                        {"./etc/systemd/system/multi-user.target.wants/lxclayer-broken.service":
                         "/etc/systemd/system/lxclayer-broken.service"})


RUN_NAME = re.compile(r"lxclayer-bt-([0-9a-f]{6})")


class Runs:
    """Collects the names of the runs a test started (from the progress messages), so the
    leftover check looks at exactly those: other boot tests may run on the machine meanwhile."""

    def __init__(self):
        self.ids: set[str] = set()
        self.messages: list[str] = []

    def __call__(self, msg: str) -> None:
        self.messages.append(msg)
        self.ids.update(RUN_NAME.findall(msg))

    def add_output(self, text: str) -> None:
        for line in text.splitlines():
            self(line)


def leftovers(ids: set[str]) -> dict[str, list[str]]:
    """Everything the runs `ids` could have left behind."""
    assert ids, "no run names seen"
    names = {f"lxclayer-bt-{i}" for i in ids}
    links = {f"bt{k}{i}" for i in ids for k in "bc"}

    def mine(text: str) -> bool:
        return any(n in text for n in names)

    def out(*cmd):
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout

    procs = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if mine(cmd):
                procs.append(f"{p.name} {cmd.strip()}")
    cgroup = Path("/sys/fs/cgroup")
    found = {
        "containers": [n for n in out("lxc-ls", "-1").split() if n in names],
        "netns": [line.split()[0] for line in out("ip", "netns", "list").splitlines() if mine(line)],
        "links": [n for n in os.listdir("/sys/class/net") if n in links],
        "dirs": [str(p) for p in Path("/var/tmp").glob("lxclayer-bt-*") if p.name in names],
        "processes": procs,
        "mounts": [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                   if mine(line)],
        "locks": [str(p) for p in Path("/run/lxc/lock").rglob("*") if mine(str(p))]
        if Path("/run/lxc/lock").exists() else [],
        "cgroups": [str(p) for p in [*cgroup.glob("*/lxc.*"), *cgroup.glob("lxc.*")] if mine(str(p))],
    }
    return {k: v for k, v in found.items() if v}


def assert_nothing_left(runs: Runs) -> None:
    left = leftovers(runs.ids)
    assert not left, f"left behind: {left}"


def web_checks() -> list[Check]:
    return [
        Check(name="hostname is PVE's", run=["cat", "/etc/hostname"], stdout_contains=["lxclayer-bt-"]),
        Check(name="eth0 got an address by DHCP", run=["ip", "-4", "-o", "addr", "show", "eth0"],
              stdout_contains=["inet ", "dynamic"]),
        Check(name="interfaces as PVE writes them", run=["cat", "/etc/network/interfaces"],
              stdout_contains=["iface eth0 inet dhcp"]),
        Check(name="machine id made at first boot", run=["test", "-s", "/etc/machine-id"]),
        Check(name="runs as a user", run=["id", "-un"], user="nobody", stdout_contains=["nobody"]),
        Check(name="health", http="http://127.0.0.1:8080/health",
              json={"status": "ok", "checks.*.ok": True}, within=15),
    ]


def test_boot_checks_fault_and_reboot(good_archive):
    runs = Runs()
    web = "lxclayer-web.service"
    fault = Fault(
        name="web down", inject=["systemctl", "stop", web],
        expect=[Check(name="web is stopped", run=["systemctl", "is-active", web], exit_code=3)],
        repair=["systemctl", "start", web],
        recover=[Check(name="health back", http="http://127.0.0.1:8080/health", within=15)])
    report = boot_test(good_archive, web_checks(), [fault], timeout=180, progress=runs)
    table = report.to_table()
    print(table)
    rows = {(r.phase, r.name): r for r in report.results}
    assert report.ok, table
    assert report.network == "dhcp" and report.address.startswith("10.")
    for phase in ("boot", "reboot"):
        assert rows[(phase, "systemd is-system-running")].ok
        for c in web_checks():
            assert rows[(phase, c.name)].ok, (phase, c.name)
    assert [(r.step, r.ok) for r in report.results if r.phase == "fault:web down"] == [
        ("inject", True), ("expect", True), ("repair", True), ("recover", True)]
    assert report.times["boot"] < 60 and report.times["reboot"] < 60
    assert report.seconds_to_green is not None and report.seconds_from_start_to_green is not None
    assert report.seconds_from_start_to_green <= report.seconds_to_green
    assert "All boot checks green" in table and table.rstrip().endswith("Boot test: PASS")
    assert msgspec.json.decode(report.to_json(), type=Report) == report
    assert any("rebooting" in m for m in runs.messages)
    assert_nothing_left(runs)


def test_broken_unit_and_failing_check(broken_archive):
    runs = Runs()
    checks = [
        Check(name="loopback only", run=["cat", "/etc/network/interfaces"],
              stdout_contains=["iface lo inet loopback"]),
        Check(name="should fail", run=["sh", "-c", "echo nope >&2; exit 3"]),
    ]
    report = boot_test(broken_archive, checks, [], timeout=120, reboot=False, network=False,
                       progress=runs)
    table = report.to_table()
    print(table)
    assert not report.ok
    assert report.network == "loopback"
    rows = {r.name: r for r in report.results}
    system = rows["systemd is-system-running"]
    assert not system.ok and "lxclayer-broken.service" in system.detail
    assert rows["loopback only"].ok
    assert not rows["should fail"].ok
    assert rows["should fail"].detail == "exit code 3 (expected 0): nope"
    units = {u.name: u for u in report.failed_units}
    assert "lxclayer-broken.service" in units
    assert any("about to fail" in line for line in units["lxclayer-broken.service"].journal), units
    assert "Failed units (boot): lxclayer-broken.service" in table
    assert "Boot test: FAIL (2 of 3 failed)" in table
    assert_nothing_left(runs)


def test_boot_that_never_finishes_times_out(base_tar, tmp_path):
    runs = Runs()
    archive = make_variant(
        base_tar, tmp_path / "debian-12-bthang_1-1_amd64.tar.gz",
        {"./etc/systemd/system/lxclayer-hang.service": HANGING_UNIT},
        {"./etc/systemd/system/multi-user.target.wants/lxclayer-hang.service":
         "/etc/systemd/system/lxclayer-hang.service"})
    report = boot_test(archive, [Check(name="never runs", run=["true"])], [], timeout=8,
                       reboot=True, network=False, progress=runs)
    print(report.to_table())
    assert not report.ok and "did not finish starting within 8 s" in report.error
    assert "lxclayer-hang.service" in report.results[0].detail
    assert report.times["boot"] < 30
    assert [r.name for r in report.results] == ["systemd is-system-running"]
    assert_nothing_left(runs)


SLOW_RUN = """
from pathlib import Path
from lxclayer.boottest.run import boot_test
from lxclayer.boottest.spec import Check
boot_test(Path({archive!r}), [Check(name="slow", run=["sleep", "600"], timeout=700)], [],
          network={network}, progress=lambda m: print(m, flush=True))
"""


def _start_slow_run(archive: Path, network: bool) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN.format(archive=str(archive), network=network)],
        stdout=subprocess.PIPE, text=True, env=env)


def _wait_for_boot(proc: subprocess.Popen, runs: Runs) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        runs(line.strip())
        if line.startswith("boot: running"):
            return
    pytest.fail(f"the run ended before booting: {runs.messages}")


def test_ctrl_c_and_sigterm_leave_nothing(good_archive):
    runs = Runs()

    def interrupt(msg: str) -> None:
        runs(msg)
        if msg.startswith("boot: running"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        boot_test(good_archive, [Check(name="t", run=["true"])], [], progress=interrupt)
    assert_nothing_left(runs)

    runs = Runs()
    proc = _start_slow_run(good_archive, network=True)
    _wait_for_boot(proc, runs)
    time.sleep(1)  # inside the slow check now
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    runs.add_output(rest)
    assert proc.wait(120) == 128 + signal.SIGTERM, rest
    assert "cleaning up" in rest
    assert_nothing_left(runs)


def test_stale_leftovers_of_a_killed_run_are_removed(good_archive):
    """SIGKILL cannot be caught; the next run removes what the dead one left."""
    runs = Runs()
    proc = _start_slow_run(good_archive, network=True)
    _wait_for_boot(proc, runs)
    proc.kill()
    proc.wait(30)
    assert leftovers(runs.ids).get("dirs"), "the killed run should have left its folder"
    boot_test(good_archive, [Check(name="t", run=["true"])], [], reboot=False, network=False,
              progress=runs)
    assert any(m.startswith("removed leftovers of an earlier run") for m in runs.messages), \
        runs.messages
    assert_nothing_left(runs)


def _tar_with(member: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
        for d in ("./", "./etc/"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
        tf.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return buf.getvalue()


def test_unpack_errors_read_like_proxmox(tmp_path):
    _require()
    runs = Runs()
    dev = tarfile.TarInfo("./etc/null")
    dev.type, dev.mode, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 0o666, 1, 3
    a = tmp_path / "dev_1-1_amd64.tar.gz"
    a.write_bytes(_tar_with(dev))
    with pytest.raises(ArchiveError, match=r"Cannot mknod.*tar exit code 2") as e:
        boot_test(a, [], [], progress=runs)
    assert "\n" not in str(e.value) and e.value.exit_code == 2

    big = tarfile.TarInfo("./etc/file")
    big.size, big.uid, big.gid = 1, 70000, 0
    b = tmp_path / "uid_1-1_amd64.tar.gz"
    b.write_bytes(_tar_with(big))
    with pytest.raises(ArchiveError, match="Cannot change ownership"):
        boot_test(b, [], [], progress=runs)

    c = tmp_path / "garbage_1-1_amd64.tar.gz"
    c.write_bytes(b"not a tarball")
    with pytest.raises(ArchiveError, match="unpacking failed"):
        boot_test(c, [], [], progress=runs)

    # Unpacks fine, but there is nothing to boot: a report, not an exception.
    d = tmp_path / "noinit_1-1_amd64.tar.gz"
    d.write_bytes(_tar_with(tarfile.TarInfo("./etc/empty")))
    report = boot_test(d, [Check(name="t", run=["true"])], [], progress=runs)
    assert not report.ok and report.results[0].name == "lxc-start"
    assert 'Failed to exec "/sbin/init"' in report.results[0].detail
    assert sum(m.startswith("boot test lxclayer-bt-") for m in runs.messages) == 4
    assert_nothing_left(runs)
