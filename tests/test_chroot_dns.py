"""A program layer with `network = true` resolves names through the host's resolv.conf, on the
snapshot path (the default), whatever the host's resolver is (issue 19, item 1).

The host's only resolver here is a dnsmasq the test starts in a network namespace of its own,
on that namespace's non-loopback address (reached through a veth pair); lxclayer runs in a mount
namespace whose /etc/resolv.conf names it. The chroot's own resolv.conf names no server (glibc
would then ask 127.0.0.1, where nothing answers). The store is reached through a symlink, as
~/.cache often is: the snapshot overlay's view (/proc/<helper>/root/<path>) then followed the
symlink in lxclayer's own mount namespace, where the overlay is not mounted, so what lxclayer
wrote into "the view" (the host's resolv.conf) never reached the program: it failed with
"getent ... exit code 2" on ebbd911.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from lxclayer.store import Store

from .e2e_support import require_root, require_tools, unavailable

NAME = "mirror.lxclayer.test"
TOOLS = ("/usr/bin/getent", "/usr/bin/dash", "/usr/bin/cat")


def _libs(binary: str) -> set[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = set()
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/"):
                libs.add(p)
    return libs


def tiny_root() -> bytes:
    """A root file system with sh, cat and getent from the host (glibc's resolver, no server in
    resolv.conf), as a tarball for an import layer."""
    buf = io.BytesIO()
    files: set[str] = set(TOOLS)
    for t in TOOLS:
        files |= _libs(t)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(name: str, type_=tarfile.DIRTYPE, mode=0o755, data=b"", linkname=""):
            ti = tarfile.TarInfo("./" + name if name else "./")
            ti.type, ti.mode, ti.mtime, ti.linkname = type_, mode, 1_700_000_000, linkname
            if type_ == tarfile.REGTYPE:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)

        dirs = {"", "etc", "usr", "usr/bin", "usr/sbin", "usr/lib", "tmp", "run", "dev", "proc", "sys", "lib64"}
        real = {os.path.realpath(f).lstrip("/") for f in files}
        for f in real:
            parts = f.split("/")[:-1]
            dirs |= {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
        for d in sorted(dirs):
            add(d, mode=0o1777 if d == "tmp" else 0o755)
        for link in ("bin", "lib", "sbin"):  # merged /usr
            add(link, tarfile.SYMTYPE, 0o777, linkname=f"usr/{link}")
        for f in sorted(real):
            add(f, tarfile.REGTYPE, 0o755, Path("/" + f).read_bytes())
        for f in sorted(files):  # the dynamic loader's path, /lib64/ld-linux-x86-64.so.2
            if f.startswith("/lib64/"):
                add(f.lstrip("/"), tarfile.SYMTYPE, 0o777, linkname=os.path.realpath(f))
        add("usr/bin/sh", tarfile.SYMTYPE, 0o777, linkname="dash")
        add("etc/nsswitch.conf", tarfile.REGTYPE, 0o644, b"hosts: dns\n")
        add("etc/resolv.conf", tarfile.REGTYPE, 0o644, b"# no server here: glibc would ask 127.0.0.1\n")
    return buf.getvalue()


def write_project(root: Path) -> Path:
    (root / "layers/base").mkdir(parents=True)
    (root / "layers/probe").mkdir(parents=True)
    (root / "templates").mkdir()
    (root / "locks").mkdir()
    tar = tiny_root()
    (root / "layers/base/base.tar").write_bytes(tar)
    (root / "layers/base/layer.toml").write_text(
        f'kind = "import"\npath = "base.tar"\nsha256 = "{hashlib.sha256(tar).hexdigest()}"\n')
    (root / "layers/probe/layer.toml").write_text(
        'kind = "script"\nrequires = ["base"]\nscript = "probe.sh"\nnetwork = true\n')
    (root / "layers/probe/probe.sh").write_text(f"getent hosts {NAME} > /resolved\n")
    (root / "templates/dns.toml").write_text(textwrap.dedent("""\
        name = "dns-probe"
        version = "1.0"
        release = 1
        arch = "amd64"
        formats = ["tar.gz"]
        source_date_epoch = 1700000000
        layers = ["base", "probe"]
        """))
    return root


def _in_use() -> str:
    return subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout + \
        subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout


@pytest.fixture
def resolver(tmp_path: Path):
    """dnsmasq in a network namespace of its own, answering NAME on its non-loopback address;
    yields (address, log file)."""
    require_root()
    require_tools("ip", "dnsmasq", "unshare", "ldd", "nsenter")
    tag = f"{os.getpid() % 10000:04d}{random.randrange(1 << 16):04x}"
    ns, host_if, ns_if = f"lxl-dns-{tag}", f"ldh{tag}", f"ldn{tag}"
    used = _in_use()
    for _ in range(50):
        a, b = random.randrange(64, 250), random.randrange(1, 250)
        if f"10.{a}.{b}." not in used:
            break
    host_ip, ns_ip = f"10.{a}.{b}.1", f"10.{a}.{b}.2"
    log = tmp_path / "dnsmasq.log"
    proc = None
    try:
        for cmd in (["ip", "netns", "add", ns],
                    ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
                    ["ip", "link", "set", ns_if, "netns", ns],
                    ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
                    ["ip", "link", "set", host_if, "up"],
                    ["ip", "-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if],
                    ["ip", "-n", ns, "link", "set", ns_if, "up"],
                    ["ip", "-n", ns, "link", "set", "lo", "up"]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                unavailable(f"cannot make a network namespace: {' '.join(cmd)}: {r.stderr.strip()}")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
             "--bind-interfaces", f"--listen-address={ns_ip}", "--except-interface=lo",
             f"--host-record={NAME},{ns_ip}", "--log-queries", f"--log-facility={log}",
             "--pid-file=", "--user=root", "--conf-file=/dev/null"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(100):
            if log.exists() and "started" in log.read_text():
                break
            if proc.poll() is not None:
                unavailable(f"dnsmasq did not start: {proc.stderr.read().decode().strip()}")  # type: ignore[union-attr]
            time.sleep(0.05)
        yield ns_ip, log
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_network_layer_on_snapshots_resolves_through_the_hosts_resolver(resolver, tmp_path):
    ns_ip, log = resolver
    project = write_project(tmp_path / "proj")
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    store = tmp_path / "link" / "store"
    out = _build(tmp_path, ns_ip, project, store)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"query[A] {NAME}" in log.read_text()  # the program asked our resolver, nothing else
    st = Store(real / "store")
    probe = _layer(st, "probe")
    paths = {e.path: e for e in probe.entries}
    assert "etc/resolv.conf" not in paths  # the host's resolv.conf never reaches the layer
    assert "etc" not in paths
    assert st.read_blob(paths["resolved"].hash).decode().split() == [ns_ip, NAME]
    # nothing is left mounted or written beside the snapshots
    assert not [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if str(real) in ln]


def _build(tmp_path: Path, ns_ip: str, project: Path, store: Path) -> subprocess.CompletedProcess:
    conf = tmp_path / "host-resolv.conf"
    conf.write_text(f"nameserver {ns_ip}\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    env["LXCLAYER_STORE"] = str(store)
    env.pop("LXCLAYER_SNAPSHOTS", None)
    script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", str(conf),
         sys.executable, "-m", "lxclayer", "build", "--template", "dns-probe", "--out", str(tmp_path / "dist")],
        cwd=project, env=env, text=True, capture_output=True, timeout=600)


def _layer(st: Store, name: str):
    for d in st.entries():
        e = st.lookup(d)
        if e is not None and e.meta.layer == name:
            return e
    raise AssertionError(f"no layer {name} in the store")



PROGRAM = """
import sys, tarfile
from pathlib import Path
from lxclayer.debian.chroot import Bind, Chroot
from lxclayer.overlay import StackMount
base, tar, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
lower = base / "lower"
lower.mkdir()
with tarfile.open(tar) as tf:
    tf.extractall(lower, filter="fully_trusted")
debs = base / "debs"
debs.mkdir()
(debs / "x.deb").write_text("a package")
binds = [Bind(debs, "/run/lxclayer/debs")] if "--bind" in sys.argv else []
with StackMount(base, [lower], base / "upper", base / "work", base / "root") as m:
    with Chroot(m.view, base, binds, enter=m.enter, run_root=m.mountpoint) as ch:
        if binds:
            out = ch.run(["/usr/bin/cat", "/run/lxclayer/debs/x.deb"])
            print("bind", out.returncode, out.text.strip().splitlines()[-1])
        out = ch.run(["/usr/bin/getent", "hosts", name], network=True)
        print("network", out.returncode, out.text.strip())
        out = ch.run(["/usr/bin/cat", "/etc/resolv.conf"], network=False)
        print("offline", out.returncode, out.text.strip())
"""


def _chroot_program(tmp_path: Path, ns_ip: str, *args: str) -> subprocess.CompletedProcess:
    tar = tmp_path / "root.tar"
    tar.write_bytes(tiny_root())
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    conf = tmp_path / "host-resolv.conf"
    conf.write_text(f"nameserver {ns_ip}\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", str(conf),
         sys.executable, "-c", PROGRAM, str(tmp_path / "link"), str(tar), NAME, *args],
        env=env, text=True, capture_output=True, timeout=120)


def test_a_chroot_on_a_snapshot_overlay_gets_the_hosts_resolver_only_with_network(resolver, tmp_path):
    """The Chroot of the snapshot path: with network the program resolves through the host's
    resolver; without, it sees the tree's own resolv.conf; the upper directory records nothing."""
    ns_ip, log = resolver
    real = tmp_path / "real"
    out = _chroot_program(tmp_path, ns_ip)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["network", "0", ns_ip, NAME]
    assert lines[1] == "offline 0 # no server here: glibc would ask 127.0.0.1"
    assert f"query[A] {NAME}" in log.read_text()
    # resolv.conf and policy-rc.d leave nothing: only the folders policy-rc.d was made in
    # (with mtimes the scan clamps to those below), no file, no whiteout
    left = {p.relative_to(real / "upper").as_posix(): p for p in (real / "upper").rglob("*")}
    assert sorted(left) == ["usr", "usr/sbin"] and all(p.is_dir() for p in left.values())


def test_the_mount_point_of_a_bind_is_made_in_the_overlay(resolver, tmp_path):
    """Issue 19, item 2 ("apt-get install failed: dmesg(1) may have more information after failed
    mount system call"): the .debs' mount point was made where the view pointed, not in the
    overlay, so the bind mount of the install step failed (on ebbd911)."""
    out = _chroot_program(tmp_path, resolver[0], "--bind")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[0] == "bind 0 a package"
