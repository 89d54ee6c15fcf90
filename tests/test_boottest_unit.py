"""Unit tests of the boot test's pure parts: PVE's file contents, the LXC config, the tar
command, check judging and retries, the report, the workspace bookkeeping. Run anywhere."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import subprocess
from pathlib import Path

import msgspec
import pytest

from lxclayer.boottest import checks as ch
from lxclayer.boottest import lxcconf, network, pve, run, unpack, workspace
from lxclayer.boottest.container import Result
from lxclayer.boottest.report import CheckResult, FailedUnit, Report
from lxclayer.boottest.rootfs import RootFS
from lxclayer.boottest.spec import Check, Fault
from lxclayer.errors import ArchiveError, DefinitionError, UserError


# -- PVE file contents ---------------------------------------------------------------------
def test_interfaces_dhcp_and_loopback():
    assert pve.interfaces_text(True) == (
        "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n")
    assert pve.interfaces_text(False) == "auto lo\niface lo inet loopback\n"


def test_hostname_is_first_label():
    assert pve.hostname_text("ct1.example.org") == "ct1\n"
    assert pve.hostname_text("ct1") == "ct1\n"


def test_hosts_new_file_gets_localhost_and_name():
    assert pve.hosts_text(None, "ct1") == (
        "# --- BEGIN PVE ---\n"
        "127.0.0.1 localhost.localnet localhost\n"
        "::1 localhost.localnet localhost\n"
        "127.0.1.1 ct1\n"
        "# --- END PVE ---\n")


def test_hosts_existing_localhost_kept_and_block_appended():
    old = "127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n"
    new = pve.hosts_text(old, "ct1")
    assert new == old + "# --- BEGIN PVE ---\n127.0.1.1 ct1\n# --- END PVE ---\n"


def test_hosts_block_replaced_in_place_on_next_start():
    first = pve.hosts_text("127.0.0.1 localhost\n# mine\n", "old")
    second = pve.hosts_text(first, "new")
    assert "127.0.1.1 new" in second and "old" not in second
    assert second.count("BEGIN PVE") == 1 and second.startswith("127.0.0.1 localhost\n# mine\n")


def test_hosts_fqdn_and_searchdomain():
    assert "127.0.1.1 ct1\n" in pve.hosts_text(None, "ct1.example.org")
    assert "10.0.0.5 ct1.a.b ct1\n" in pve.hosts_text(None, "ct1", "a.b", hostip="10.0.0.5")


def test_resolv_replaces_file_without_block():
    old = "nameserver 192.0.2.53\n"
    assert pve.resolv_text(old, ["10.230.1.1"], None) == (
        "# --- BEGIN PVE ---\nnameserver 10.230.1.1\n# --- END PVE ---\n")
    assert pve.resolv_text(None, [], None) is None
    assert pve.resolv_text(old, [], None) is None


def test_modify_marked_prepend_and_empty():
    assert pve.modify_marked("a\n", "x", how="prepend") == (
        "# --- BEGIN PVE ---\nx\n# --- END PVE ---\na\n")
    assert pve.modify_marked("a\n", "") is None


def test_preset_is_what_pve_writes():
    assert pve.PRESET_TEXT.splitlines() == [
        "# Added by PVE at create-time for first-boot configuration.",
        "enable container-getty@.service",
        "disable getty@.service",
        "disable sys-kernel-config.mount",
        "disable sys-kernel-debug.mount",
        "disable systemd-networkd.service",
    ]


def test_locked_password():
    shadow = "root:$y$abc:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n"
    assert pve.locked_password_text(shadow, "root", shadow=True, today=20000).splitlines()[0] == \
        "root:*:20000:0:99999:7:::"
    passwd = "root:x:0:0:root:/root:/bin/bash\n"
    assert pve.locked_password_text(passwd, "root", shadow=False, today=1) == passwd


def test_crontab_minutes_randomised_for_root_only():
    text = "17 * * * * root cd / && run-parts --report /etc/cron.hourly\n5 1 * * * www true\n"
    out = pve.randomized_crontab_text(text, random.Random(1))
    lines = out.splitlines()
    assert lines[0].endswith("* * * * root cd / && run-parts --report /etc/cron.hourly")
    assert lines[1] == "5 1 * * * www true"


def test_container_getty_and_debian_version():
    src = "ExecStart=-/sbin/agetty -o '-p -- \\\\u' --noclear --keep-baud pts/%I 115200 $TERM\n"
    assert "--keep-baud tty%I" in pve.container_getty_text(src)
    assert pve.debian_major("12.12\n") == 12
    assert pve.debian_major("trixie/sid") == 99
    assert pve.debian_major(None) is None


# -- RootFS: writing inside the tree, never outside ------------------------------------------
@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    for d in ("etc/network", "etc/ssh", "lib/systemd/system", "var/lib/dbus", "run"):
        (root / d).mkdir(parents=True)
    (root / "etc/machine-id").write_text("0123\n")
    (root / "var/lib/dbus/machine-id").write_text("0123\n")
    (root / "etc/debian_version").write_text("12.12\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/shadow").write_text("root:$y$x:19000:0:99999:7:::\n")
    os.chmod(root / "etc/shadow", 0o640)
    systemd = root / "lib/systemd/systemd"
    systemd.write_text("#!/bin/sh\n")
    systemd.chmod(0o755)
    (root / "lib/systemd/system/container-getty@.service").write_text("ExecStart=agetty pts/%I\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    # A hostile template: resolv.conf points out of the tree.
    (root / "etc/resolv.conf").symlink_to(str(outside / "resolv.conf"))
    return root, outside


def fs_of(root: Path) -> RootFS:
    return RootFS(root, uid=os.getuid(), gid=os.getgid())


def test_resolve_keeps_absolute_links_and_dotdot_inside(tree):
    root, outside = tree
    fs = fs_of(root)
    (root / "etc/up").symlink_to("../../../../../etc")
    assert fs.resolve("/etc/resolv.conf") == root / str(outside).lstrip("/") / "resolv.conf"
    assert fs.resolve("/etc/up/hosts") == root / "etc/hosts"
    assert fs.resolve("/../../etc/hosts") == root / "etc/hosts"


def test_write_replaces_symlink_instead_of_following_it(tree):
    root, outside = tree
    fs = fs_of(root)
    fs.write_text("/etc/resolv.conf", "nameserver 10.0.0.1\n")
    assert not (root / "etc/resolv.conf").is_symlink()
    assert (root / "etc/resolv.conf").read_text() == "nameserver 10.0.0.1\n"
    assert not (outside / "resolv.conf").exists()


def test_symlinked_parent_dir_stays_in_tree(tree):
    root, outside = tree
    fs = fs_of(root)
    (root / "etc/network").rmdir()
    (root / "etc/network").symlink_to(str(outside))
    fs.write_text("/etc/network/interfaces", "x\n")
    assert list(outside.iterdir()) == []
    assert (root / str(outside).lstrip("/") / "interfaces").read_text() == "x\n"


def test_pve_ignore_leaves_file_alone(tree):
    root, _ = tree
    fs = fs_of(root)
    (root / "etc/.pve-ignore.hosts").write_text("")
    assert fs.write_text("/etc/hosts", "new\n") is False
    assert (root / "etc/hosts").read_text() == "127.0.0.1 localhost\n"


def test_apply_create_and_start(tree):
    root, outside = tree
    fs = fs_of(root)
    settings = pve.Settings(hostname="bt1", dhcp=True, nameservers=["10.230.9.1"])
    notes = pve.apply_create(fs, settings, rng=random.Random(0))
    pve.apply_start(fs, settings)
    assert not (root / "etc/machine-id").exists()
    assert not (root / "var/lib/dbus/machine-id").exists()
    assert "removed /etc/machine-id" in notes
    assert (root / "etc/hostname").read_text() == "bt1\n"
    assert "iface eth0 inet dhcp" in (root / "etc/network/interfaces").read_text()
    assert (root / "etc/systemd/system-preset/00-pve.preset").read_text() == pve.PRESET_TEXT
    assert "127.0.1.1 bt1" in (root / "etc/hosts").read_text()
    assert "nameserver 10.230.9.1" in (root / "etc/resolv.conf").read_text()
    assert (root / "etc/shadow").read_text().startswith("root:*:")
    assert oct((root / "etc/shadow").stat().st_mode & 0o777) == "0o640"
    assert "tty%I" in (root / "lib/systemd/system/container-getty@.service").read_text()
    assert (root / "fastboot").exists()
    assert list(outside.iterdir()) == []


def test_no_preset_before_debian_12(tree):
    root, _ = tree
    (root / "etc/debian_version").write_text("11.9\n")
    pve.apply_start(fs_of(root), pve.Settings(hostname="x", dhcp=False))
    assert not (root / "etc/systemd/system-preset/00-pve.preset").exists()
    assert (root / "etc/network/interfaces").read_text() == "auto lo\niface lo inet loopback\n"


# -- LXC config ----------------------------------------------------------------------------
def test_lxc_config_like_pve_unprivileged_with_nesting(tmp_path):
    text = lxcconf.config_text(lxcconf.LxcSettings(
        name="lxclayer-bt-abc", hostname="h1", rootfs=tmp_path / "rootfs", phys_link="btcabc",
        arch="amd64"))
    lines = text.splitlines()
    for want in (
        "lxc.arch = amd64",
        "lxc.include = /usr/share/lxc/config/debian.common.conf",
        "lxc.include = /usr/share/lxc/config/debian.userns.conf",
        "lxc.idmap = u 0 100000 65536",
        "lxc.idmap = g 0 100000 65536",
        "lxc.mount.entry = proc dev/.lxc/proc proc create=dir,optional 0 0",
        "lxc.mount.entry = sys dev/.lxc/sys sysfs create=dir,optional 0 0",
        "lxc.mount.auto = sys:mixed",
        "lxc.apparmor.profile = unconfined",
        f"lxc.rootfs.path = dir:{tmp_path / 'rootfs'}",
        "lxc.uts.name = h1",
        "lxc.net.0.type = phys",
        "lxc.net.0.link = btcabc",
        "lxc.net.0.name = eth0",
    ):
        assert want in lines, want
    # The includes come before anything that overrides them.
    assert lines.index("lxc.include = /usr/share/lxc/config/debian.userns.conf") < \
        lines.index("lxc.cap.drop = sys_rawio")


def test_lxc_config_loopback_and_apparmor(tmp_path):
    text = lxcconf.config_text(lxcconf.LxcSettings(
        name="n", hostname="h", rootfs=tmp_path, apparmor=True))
    assert "lxc.net.0.type = empty" in text.splitlines()
    assert "lxc.apparmor.profile = generated" in text and "lxc.apparmor.allow_nesting = 1" in text
    assert "phys" not in text


# -- unpack --------------------------------------------------------------------------------
def test_tar_command_is_pcts():
    cmd = unpack.tar_command(Path("/r"), ".tar.zst")
    assert cmd == [
        "lxc-usernsexec", "-m", "u:0:100000:65536", "-m", "g:0:100000:65536", "--",
        "tar", "xpf", "-", "--zstd", "--totals", "--one-file-system", "-p", "--sparse",
        "--numeric-owner", "--acls", "--xattrs", "--xattrs-include=user.*",
        "--xattrs-include=security.capability", "--warning=no-file-ignored",
        "--warning=no-xattr-write", "-C", "/r", "--skip-old-files", "--anchored",
        "--exclude", "./dev/*"]
    assert "-z" in unpack.tar_command(Path("/r"), ".tar.gz")


def test_archive_suffix_from_name_only():
    assert unpack.archive_suffix(Path("debian-12-x_1-1_amd64.tar.zst")) == ".tar.zst"
    assert unpack.archive_suffix(Path("a.tar.gz")) == ".tar.gz"
    with pytest.raises(ArchiveError, match="compression is taken from the name"):
        unpack.archive_suffix(Path("a.tgz"))


def test_failure_message_reads_like_proxmox():
    stderr = ("tar: ./etc/null: Cannot mknod: Operation not permitted\n"
              "Total bytes read: 10240 (10KiB, 20MiB/s)\n"
              "tar: Exiting with failure status due to previous errors\n")
    msg = unpack.failure_message(Path("t.tar.gz"), 2, stderr)
    assert msg == ("unpacking failed as `pct create` would fail: tar: ./etc/null: Cannot mknod: "
                   "Operation not permitted; tar exit code 2")
    assert "\n" not in msg


def test_ensure_subids_adds_once(tmp_path):
    uid, gid = tmp_path / "subuid", tmp_path / "subgid"
    uid.write_text("alice:200000:65536")
    assert unpack.ensure_subids((str(uid), str(gid))) == [str(uid), str(gid)]
    assert uid.read_text() == "alice:200000:65536\nroot:100000:65536\n"
    assert gid.read_text() == "root:100000:65536\n"
    assert unpack.ensure_subids((str(uid), str(gid))) == []


# -- network (pure parts) --------------------------------------------------------------------
def test_subnet_avoids_host_networks():
    used = [ipaddress.ip_network("10.230.0.0/16")]
    net = network.choose_subnet(used, random.Random(3))
    assert net.prefixlen == 24 and net.subnet_of(network.CANDIDATE_POOL)
    assert not net.overlaps(used[0])
    with pytest.raises(RuntimeError):
        network.choose_subnet([network.CANDIDATE_POOL])


def test_names_and_dnsmasq_command(tmp_path):
    names = network.Names.for_run("abc123")
    assert all(len(n) <= 15 for n in (names.host_end, names.container_end, names.bridge))
    cmd = network.dnsmasq_command(names, ipaddress.ip_network("10.230.7.0/24"), tmp_path)
    assert cmd[:3] == ["nsenter", "--net=/run/netns/lxclayer-bt-abc123", "--"]
    assert "--port=0" in cmd and "--conf-file=/dev/null" in cmd
    assert "--dhcp-range=10.230.7.10,10.230.7.200,255.255.255.0,1h" in cmd
    assert "--dhcp-option=option:router,10.230.7.1" in cmd
    mac = network.random_mac(random.Random(1))
    assert int(mac.split(":")[0], 16) & 0b10 and not int(mac.split(":")[0], 16) & 1


# -- checks ----------------------------------------------------------------------------------
def R(rc=0, out="", err="", timed_out=False):
    return Result(rc, out, err, timed_out=timed_out)


def test_judge_run():
    c = Check(name="c", run=["x"], exit_code=0, stdout_contains=["ready", "ok"])
    assert ch.judge_run(c, R(0, "ready and ok")) == (True, "exit code 0")
    ok, detail = ch.judge_run(c, R(1, "", "boom"))
    assert not ok and detail == "exit code 1 (expected 0): boom"
    ok, detail = ch.judge_run(c, R(0, "ready"))
    assert not ok and "'ok'" in detail
    assert not ch.judge_run(c, R(timed_out=True))[0]
    assert ch.judge_run(Check(name="c", run=["x"], exit_code=3), R(3))[0]


def test_lookup_paths():
    data = {"status": "ok", "checks": {"redis": {"ok": True}, "db": {"ok": False}},
            "items": [{"n": 1}, {"n": 2}]}
    assert ch.lookup(data, "status") == ["ok"]
    assert ch.lookup(data, "checks.redis.ok") == [True]
    assert ch.lookup(data, "checks.*.ok") == [True, False]
    assert ch.lookup(data, "items.1.n") == [2]
    assert ch.lookup(data, "items.*.n") == [1, 2]
    assert ch.lookup(data, "nope.x") == []


def test_judge_http():
    c = Check(name="h", http="http://127.0.0.1/health", json={"status": "ok", "checks.*.ok": True})
    good = json.dumps({"status": "ok", "checks": {"a": {"ok": True}, "b": {"ok": True}}})
    assert ch.judge_http(c, 200, good) == (True, "status 200")
    bad = json.dumps({"status": "ok", "checks": {"a": {"ok": True}, "redis": {"ok": False}}})
    ok, detail = ch.judge_http(c, 200, bad)
    assert not ok and "checks.*.ok = false (expected true)" in detail
    ok, detail = ch.judge_http(c, 503, '{"status":"fail"}')
    assert not ok and detail.startswith("status 503 (expected 200)")
    assert not ch.judge_http(c, 200, "<html>")[0]
    assert ch.judge_http(c, None, "", "URLError: refused") == (False, "URLError: refused")
    # JSON true is not 1
    assert not ch.judge_http(Check(name="h", http="http://x/", json={"n": True}), 200, '{"n": 1}')[0]
    assert ch.judge_http(Check(name="h", http="http://x/", json={"n": 2}), 200, '{"n": 2.0}')[0]


def test_parse_http_outputs():
    assert ch.parse_http("python3", R(0, '{"status": 503, "body": "x"}\n')) == (503, "x", None)
    assert ch.parse_http("python3", R(0, '{"error": "URLError: no"}\n'))[2] == "URLError: no"
    assert ch.parse_http("curl", R(0, '{"a":1}\n200')) == (200, '{"a":1}', None)
    assert ch.parse_http("curl", R(7, "\n000", "curl: (7) refused"))[2].startswith("curl failed (7)")


def test_http_command_prefers_given_tool():
    assert ch.http_command("python3", "http://a/", 5)[:2] == ["python3", "-c"]
    assert ch.http_command("curl", "http://a/", 5)[0] == "curl"


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_runner_retries_until_pass_within():
    clock = FakeClock()
    answers = iter([R(1), R(1), R(0)])
    calls = []

    def attach(argv, timeout):
        calls.append(argv)
        clock.t += 0.1
        return next(answers)

    runner = ch.CheckRunner(attach, interval=1, clock=clock, sleep=clock.sleep)
    out = runner.run(Check(name="c", run=["true"], within=5, user="app"))
    assert out.ok and out.attempts == 3
    assert calls[0] == ["runuser", "-u", "app", "--", "true"]


def test_runner_gives_up_after_within():
    clock = FakeClock()

    def attach(argv, timeout):
        clock.t += 0.1
        return R(1, "", "nope")

    out = ch.CheckRunner(attach, interval=1, clock=clock, sleep=clock.sleep).run(
        Check(name="c", run=["false"], within=3))
    assert not out.ok and out.attempts == 3 and "still after 3 tries" in out.detail
    once = ch.CheckRunner(attach, interval=1, clock=clock, sleep=clock.sleep).run(
        Check(name="c", run=["false"]))
    assert once.attempts == 1


def test_runner_http_falls_back_to_curl_and_reports_none():
    def attach_curl(argv, timeout):
        if argv[0] == "sh":
            return R(0, "/usr/bin/curl\n")
        assert argv[0] == "curl"
        return R(0, '{"ok": true}\n200')

    c = Check(name="h", http="http://127.0.0.1:1/", json={"ok": True})
    assert ch.CheckRunner(attach_curl).once(c) == (True, "status 200")

    def attach_none(argv, timeout):
        return R(1, "")

    ok, detail = ch.CheckRunner(attach_none).once(c)
    assert not ok and "neither python3 nor curl" in detail


def test_validate_definitions():
    with pytest.raises(DefinitionError, match="exactly one"):
        ch.validate([Check(name="x")], [])
    with pytest.raises(DefinitionError, match="exactly one"):
        ch.validate([Check(name="x", run=["a"], http="http://a/")], [])
    with pytest.raises(DefinitionError, match=r"faults\[0\]\.expect\[0\]"):
        ch.validate([], [Fault(name="f", inject=["a"], repair=["b"], expect=[Check(name="e")])])
    ch.validate([Check(name="x", run=["a"])],
                [Fault(name="f", inject=["a"], repair=["b"], expect=[Check(name="e", run=["c"])])])


def test_spec_decodes_from_toml_shape():
    data = {"name": "h", "http": "http://127.0.0.1:8000/health", "status": 200,
            "json": {"checks.*.ok": True}, "within": 10, "user": "app"}
    c = msgspec.convert(data, Check)
    assert c.user == "app" and c.timeout == 60.0
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"name": "x", "bogus": 1}, Check)


# -- report ----------------------------------------------------------------------------------
def sample_report() -> Report:
    return Report(
        archive="t.tar.zst", container="lxclayer-bt-abc", network="dhcp", address="10.230.1.57",
        results=[
            CheckResult(name="systemd is-system-running", phase="boot", ok=False, seconds=1.2,
                        detail="degraded; failed units: broken.service", step="system"),
            CheckResult(name="health", phase="boot", ok=True, seconds=0.3),
            CheckResult(name="systemctl stop redis", phase="fault:redis", ok=True, seconds=0.1,
                        step="inject"),
            CheckResult(name="503", phase="fault:redis", ok=True, seconds=2.0, step="expect"),
        ],
        failed_units=[FailedUnit(name="broken.service", phase="boot",
                                 journal=["Nov 25 broken.service: Main process exited"])],
        times={"unpack": 2.5, "boot": 1.2, "total": 9.0},
    )


def test_table_shows_rows_units_and_journal():
    text = sample_report().to_table()
    lines = text.splitlines()
    assert lines[0].split() == ["PHASE", "CHECK", "RESULT", "TIME", "DETAIL"]
    assert any(line.startswith("boot") and "FAIL" in line and "broken.service" in line for line in lines)
    assert any("[inject] systemctl stop redis" in line for line in lines)
    assert any("expect: 503" in line for line in lines)
    assert "Failed units (boot): broken.service" in text
    assert "  Nov 25 broken.service: Main process exited" in lines
    assert "eth0 by DHCP on a private bridge (10.230.1.57)" in text
    assert lines[-1] == "Boot test: FAIL (1 of 4 failed)"


def test_report_json_round_trip():
    r = sample_report()
    back = msgspec.json.decode(r.to_json(), type=Report)
    assert back == r
    assert json.loads(r.to_json())["results"][0]["phase"] == "boot"


# -- run: preflight, signals ----------------------------------------------------------------
def test_preflight_needs_root(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match="needs root"):
        run.preflight(tmp_path / "a.tar.gz")


def test_preflight_names_missing_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(run.shutil, "which", lambda t: None if t in ("lxc-start", "newuidmap") else "/x")
    with pytest.raises(UserError, match="install Debian's lxc uidmap packages"):
        run.preflight(tmp_path / "a.tar.gz")


def test_preflight_archive_problems(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(run.shutil, "which", lambda t: "/x")
    monkeypatch.setattr(run.Path, "exists", lambda self: str(self).startswith("/usr/share/lxc") or
                        Path.is_file(self) or Path.is_dir(self))
    with pytest.raises(ArchiveError, match="no such file"):
        run.preflight(tmp_path / "missing.tar.gz")
    with pytest.raises(ArchiveError, match="name Proxmox reads"):
        run.preflight(tmp_path / "x.zip")
    e = pytest.raises(UserError, run.preflight, tmp_path / "missing.tar.gz").value
    assert e.exit_code == 2


def _deliver(sig):
    os.kill(os.getpid(), sig)
    for _ in range(1000):  # the Python-level handler runs between bytecodes
        pass


def test_signals_raise_while_running_and_are_noted_while_cleaning():
    with run._Signals() as s:
        with pytest.raises(run.Terminated):
            _deliver(signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            _deliver(signal.SIGINT)
        s.cleaning = True
        _deliver(signal.SIGTERM)
        assert s.seen == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


# -- workspace bookkeeping -------------------------------------------------------------------
def test_stale_workspaces_by_owner(tmp_path):
    live = tmp_path / "lxclayer-bt-aaaaaa"
    dead = tmp_path / "lxclayer-bt-bbbbbb"
    other = tmp_path / "something-else"
    for d in (live, dead, other):
        d.mkdir()
    me = os.getpid()
    (live / "owner").write_text(f"{me} {workspace._proc_start_time(me)}\n")
    p = subprocess.Popen(["true"])
    p.wait()
    (dead / "owner").write_text(f"{p.pid} 12345\n")
    stale = [w.dir for w in workspace.stale_workspaces(tmp_path)]
    assert stale == [dead]


def test_remove_tree(tmp_path):
    d = tmp_path / "x"
    (d / "a/b").mkdir(parents=True)
    (d / "a/b/f").write_text("1")
    (d / "link").symlink_to(tmp_path)
    assert workspace.remove_tree(d) == []
    assert not d.exists() and tmp_path.exists()
