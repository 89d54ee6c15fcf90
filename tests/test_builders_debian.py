"""Unit tests of the Debian builders and lxclayer.debian (no root, no network)."""

from __future__ import annotations

import hashlib
import http.server
import io
import lzma
import os
import py_compile
import struct
import tarfile
import textwrap
import threading
from pathlib import Path

import pytest

from lxclayer.builders import mmdebstrap as mm
from lxclayer.debian import apt as dapt
from lxclayer.debian import chroot, fetch, normalise, repo, wheels
from lxclayer.debian.deb822 import format_paragraph, paragraphs
from lxclayer.debian.debfile import control_fields
from lxclayer.definitions import load_project
from lxclayer.errors import BuildError, DefinitionError
from lxclayer.lock.model import Artifact
from lxclayer.manifest import Entry
from lxclayer.realise.context import Context
from lxclayer.realise.program import check_installed, installed_from_status, kept, layer_tree
from lxclayer.store import Store

SDE = 1700000000

# --- Packages indices --------------------------------------------------------------------------

PACKAGES = """\
Package: base-files
Version: 12.4+deb12u5
Architecture: amd64
Essential: yes
Priority: required
Filename: pool/main/b/base-files/base-files_12.4+deb12u5_amd64.deb
Size: 70936
SHA256: 1111111111111111111111111111111111111111111111111111111111111111
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy.

Package: apt
Version: 2.6.1
Architecture: amd64
Priority: required
Depends: adduser, libc6 (>= 2.34)
Filename: pool/main/a/apt/apt_2.6.1_amd64.deb
Size: 1372852
SHA256: 2222222222222222222222222222222222222222222222222222222222222222

Package: adduser
Version: 3.134
Architecture: all
Priority: important
Filename: pool/main/a/adduser/adduser_3.134_all.deb
Size: 183272
SHA256: 3333333333333333333333333333333333333333333333333333333333333333

Package: less
Version: 590-2.1~deb12u2
Architecture: amd64
Priority: standard
Filename: pool/main/l/less/less_590-2.1~deb12u2_amd64.deb
Size: 131264
SHA256: 4444444444444444444444444444444444444444444444444444444444444444

Package: foreign-only
Version: 1.0
Architecture: arm64
Essential: yes
Filename: pool/main/f/foreign-only/foreign-only_1.0_arm64.deb
SHA256: 5555555555555555555555555555555555555555555555555555555555555555
"""


def test_paragraphs_keep_continuation_lines_and_round_trip():
    paras = list(paragraphs(PACKAGES))
    assert [p["Package"] for p in paras] == ["base-files", "apt", "adduser", "less", "foreign-only"]
    assert paras[0]["Description"].splitlines()[1] == " This package contains the basic filesystem hierarchy."
    assert list(paragraphs(format_paragraph(paras[0]))) == [paras[0]]


def test_index_selects_variant_sets_for_the_native_architecture():
    idx = dapt.Index()
    idx.add("bookworm", PACKAGES, "amd64")
    assert idx.essential["bookworm"] == {"base-files"}  # foreign-only is arm64
    assert dapt.variant_names(idx, "bookworm", "essential") == {"base-files"}
    assert dapt.variant_names(idx, "bookworm", "apt") == {"base-files", "apt"}
    assert dapt.variant_names(idx, "bookworm", "minbase") == {"base-files", "apt"}
    assert dapt.variant_names(idx, "bookworm", "important") == {"base-files", "apt", "adduser"}
    assert dapt.variant_names(idx, "bookworm", "standard") == {"base-files", "apt", "adduser", "less"}
    assert dapt.variant_names(idx, "bookworm-security", "minbase") == {"apt"}  # other suites don't count
    assert ("apt", "2.6.1", "amd64") in idx.by_key


SIMULATION = """\
NOTE: This is only a simulation!
Reading package lists...
Inst adduser (3.134 Debian:12.5/stable [all])
Inst libc6 [2.36-9+deb12u3] (2.36-9+deb12u4 Debian-Security:12/stable-security [amd64]) []
Inst apt (2.6.1 Debian:12.5/stable [amd64])
Inst bsdutils:amd64 (1:2.38.1-5+deb12u3 Debian:12.5/stable [amd64])
Conf adduser (3.134 Debian:12.5/stable [all])
"""


def test_simulation_lines_are_parsed_with_upgrades_epochs_and_arch_qualifiers():
    assert dapt.parse_simulation(SIMULATION) == [
        ("adduser", "3.134", "all"),
        ("libc6", "2.36-9+deb12u4", "amd64"),
        ("apt", "2.6.1", "amd64"),
        ("bsdutils", "1:2.38.1-5+deb12u3", "amd64"),
    ]


def test_pins_come_from_the_index_and_a_missing_entry_is_an_error():
    idx = dapt.Index()
    idx.add("bookworm", PACKAGES, "amd64")
    pins = dapt.pins([("apt", "2.6.1", "amd64"), ("adduser", "3.134", "all")], idx)
    assert list(pins) == ["adduser", "apt"]
    assert pins["apt"] == Artifact(name="apt", version="2.6.1", arch="amd64", sha256="2" * 64,
                                   source="pool/main/a/apt/apt_2.6.1_amd64.deb", size=1372852)
    with pytest.raises(BuildError, match="apt 9.9 .amd64. has no SHA256"):
        dapt.pins([("apt", "9.9", "amd64")], idx)


def test_deb_filename_encodes_the_epoch():
    a = Artifact(name="bsdutils", version="1:2.38.1-5", arch="amd64", sha256="0" * 64)
    assert dapt.deb_filename(a) == "bsdutils_1%3a2.38.1-5_amd64.deb"


@pytest.mark.parametrize("out,reason", [
    ("Reading package lists...\nE: Unable to locate package no-such-thing\n",
     "package 'no-such-thing' does not exist in the configured sources"),
    ("The following packages have unmet dependencies:\n foo : Depends: bar but it is not installable\n"
     "E: Unable to correct problems, you have held broken packages.\n",
     "unmet dependencies: foo : Depends: bar but it is not installable"),
    ("E: Package 'vim' has no installation candidate\n", "package 'vim' has no installation candidate"),
])
def test_apt_failures_become_one_line(out, reason):
    assert dapt.apt_failure(out).startswith(reason)
    assert "\n" not in dapt.apt_failure(out)


def test_update_failures_name_the_mirror():
    out = ("Err:1 http://127.0.0.1:9/debian bookworm InRelease\n"
           "  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)\n"
           "E: Failed to fetch http://127.0.0.1:9/debian/dists/bookworm/InRelease\n")
    msg = dapt.update_failure(out)
    assert msg == ("cannot fetch the index of http://127.0.0.1:9/debian bookworm: Could not connect to "
                   "127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)")
    nokey = ("W: GPG error: http://deb.example bookworm InRelease: The following signatures couldn't be "
             "verified because the public key is not available: NO_PUBKEY 0123456789ABCDEF\n"
             "E: The repository 'http://deb.example bookworm InRelease' is not signed.\n")
    assert "NO_PUBKEY 0123456789ABCDEF" in dapt.update_failure(nokey)
    assert dapt.update_failure("Hit:1 http://deb.debian.org/debian bookworm InRelease\n") is None


def test_source_lines():
    s = dapt.parse_source_line("deb [arch=amd64 signed-by=/k.gpg] http://security.debian.org/debian-security "
                               "bookworm-security main contrib")
    assert s == dapt.SourceLine(uri="http://security.debian.org/debian-security", suite="bookworm-security",
                                components=("main", "contrib"), options=("arch=amd64", "signed-by=/k.gpg"))
    assert s.line(["signed-by=/other.gpg", "trusted=yes"]) == (
        "deb [arch=amd64 signed-by=/k.gpg trusted=yes] http://security.debian.org/debian-security "
        "bookworm-security main contrib")
    assert dapt.parse_source_line("deb file:///repo ./").flat
    for bad in ("deb-src http://x bookworm main", "deb ftp://x bookworm main", "deb http://x bookworm",
                "deb [arch=amd64 http://x bookworm main"):
        with pytest.raises(ValueError):
            dapt.parse_source_line(bad)
    text = "# comment\ndeb http://deb.debian.org/debian bookworm main\n\ndeb-src http://x y z\n"
    assert [s.uri for s in dapt.parse_sources(text)] == ["http://deb.debian.org/debian"]
    deb822 = ("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
              "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    got = dapt.parse_sources(deb822, deb822=True)
    assert [(s.uri, s.suite) for s in got] == [("http://deb.debian.org/debian", "bookworm"),
                                              ("http://deb.debian.org/debian", "bookworm-updates")]


# --- .deb files and the flat repository --------------------------------------------------------


def make_deb(path: Path, name: str, version: str, arch: str = "amd64", extra: str = "") -> Path:
    control = f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\nPriority: optional\n{extra}" \
              f"Description: test package\n a test\n"
    def tar_xz(files: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for n, data in files.items():
                ti = tarfile.TarInfo(n)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        return lzma.compress(buf.getvalue())

    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", tar_xz({"./control": control.encode()})),
               ("data.tar.xz", tar_xz({"./usr/share/doc/x": b"x"}))]
    out = bytearray(b"!<arch>\n")
    for n, data in members:
        out += f"{n:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    path.write_bytes(bytes(out))
    return path


def artifact_for(path: Path, name: str, version: str, arch: str = "amd64") -> Artifact:
    data = path.read_bytes()
    return Artifact(name=name, version=version, arch=arch, sha256=hashlib.sha256(data).hexdigest(),
                    source=f"pool/main/{name[0]}/{name}/{path.name}", size=len(data))


def test_control_fields_are_read_without_dpkg(tmp_path):
    deb = make_deb(tmp_path / "hello.deb", "hello", "1:2.0-1", extra="Depends: libc6 (>= 2.34)\n")
    f = control_fields(deb)
    assert (f["Package"], f["Version"], f["Depends"]) == ("hello", "1:2.0-1", "libc6 (>= 2.34)")


def test_flat_repository_lists_exactly_the_pins(tmp_path):
    a_deb = make_deb(tmp_path / "a.deb", "aaa", "1.0")
    b_deb = make_deb(tmp_path / "b.deb", "bbb", "2:3.0", arch="all")
    pins = {"aaa": artifact_for(a_deb, "aaa", "1.0"), "bbb": artifact_for(b_deb, "bbb", "2:3.0", "all")}
    paths = {pins["aaa"].sha256: a_deb, pins["bbb"].sha256: b_deb}
    repo.make_repo(tmp_path / "repo", pins, paths, suite="bookworm", date="Tue, 14 Nov 2023 22:13:20 UTC")
    paras = list(paragraphs((tmp_path / "repo/Packages").read_text()))
    assert [(p["Package"], p["Filename"], p["SHA256"]) for p in paras] == [
        ("aaa", "./aaa_1.0_amd64.deb", pins["aaa"].sha256),
        ("bbb", "./bbb_2%3a3.0_all.deb", pins["bbb"].sha256),
    ]
    release = next(paragraphs((tmp_path / "repo/Release").read_text()))
    assert release["Suite"] == "bookworm"
    packages_sha = hashlib.sha256((tmp_path / "repo/Packages").read_bytes()).hexdigest()
    assert packages_sha in release["SHA256"]
    # a .deb that is not what its pin says is refused
    wrong = {"aaa": Artifact(name="aaa", version="9.9", arch="amd64", sha256=pins["aaa"].sha256)}
    with pytest.raises(BuildError, match="holds aaa 1.0, not aaa 9.9"):
        repo.make_repo(tmp_path / "repo2", wrong, paths, suite="bookworm", date="x")


# --- fetching artifacts ------------------------------------------------------------------------


@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_fetch_downloads_checks_and_keeps_artifacts(tmp_path, http_dir, monkeypatch):
    monkeypatch.delenv("LXCLAYER_DEB_MIRRORS", raising=False)
    www, base = http_dir
    (www / "pool").mkdir()
    deb = make_deb(www / "pool" / "x_1.0_amd64.deb", "x", "1.0")
    a = Artifact(name="x", version="1.0", arch="amd64", sha256=hashlib.sha256(deb.read_bytes()).hexdigest(),
                 source="pool/x_1.0_amd64.deb", size=deb.stat().st_size)
    store = Store(tmp_path / "store")
    store._init()
    items = [(a, "x 1.0 (amd64)", fetch.deb_urls(a, [base + "/missing", base]))]
    # offline and not in the store: an error naming the artifact, and nothing fetched
    with pytest.raises(BuildError, match=r"package x 1.0 \(amd64\) \(sha256 [0-9a-f]{64}\) is not in the store "
                                         "and --offline is set"):
        fetch.fetch_all(store, items, tmp_path / "dl", offline=True, log=print, file="l.toml", key="packages")
    got = fetch.fetch_all(store, items, tmp_path / "dl", offline=False, log=print, file=None, key=None)
    assert got[a.sha256].read_bytes() == deb.read_bytes()
    # now in the store: offline works
    again = fetch.fetch_all(store, items, tmp_path / "dl", offline=True, log=print, file=None, key=None)
    assert again == got
    # a mirror serving other bytes is refused
    bad = Artifact(name="y", version="1", arch="amd64", sha256="0" * 64, source="pool/x_1.0_amd64.deb")
    with pytest.raises(BuildError, match="sha256 is .*, expected 0000"):
        fetch.fetch_all(store, [(bad, "y 1", fetch.deb_urls(bad, [base]))], tmp_path / "dl", offline=False,
                        log=print, file=None, key=None)
    # every mirror says 404: one line naming every place tried, pointing to [artifacts] fallbacks
    gone = Artifact(name="z", version="1", arch="amd64", sha256="1" * 64, source="pool/z_1_amd64.deb")
    with pytest.raises(BuildError, match=r"no place has package z 1 \(sha256 111111111111…\); tried "
                                         rf"{base}/pool/z_1_amd64.deb: HTTP 404; .*fallbacks.*snapshot"):
        fetch.fetch_all(store, [(gone, "z 1", fetch.deb_urls(gone, [base]))], tmp_path / "dl", offline=False,
                        log=print, file=None, key=None)


def test_extra_mirrors_come_after_the_layer_mirrors(monkeypatch):
    monkeypatch.setenv("LXCLAYER_DEB_MIRRORS", "https://snapshot.debian.org/archive/debian/20240101T000000Z/")
    a = Artifact(name="x", version="1", arch="all", sha256="0" * 64, source="pool/main/x/x/x_1+b1_all.deb")
    assert fetch.deb_urls(a, ["http://deb.debian.org/debian/"]) == [
        "http://deb.debian.org/debian/pool/main/x/x/x_1+b1_all.deb",
        "https://snapshot.debian.org/archive/debian/20240101T000000Z/pool/main/x/x/x_1+b1_all.deb",
    ]


# --- normalisation -----------------------------------------------------------------------------


def _w(root: Path, rel: str, data: bytes = b"x", mode: int = 0o644) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.chmod(p, mode)
    return p


def test_normalise_removes_what_differs_between_builds_and_instance_identities(tmp_path):
    r = tmp_path / "root"
    for rel in ("var/log/dpkg.log", "var/log/apt/history.log", "var/log/apt/term.log", "var/log/apt/eipp.log.xz",
                "var/log/alternatives.log", "var/cache/ldconfig/aux-cache", "var/lib/dbus/machine-id",
                "var/lib/systemd/random-seed", "var/cache/apt/pkgcache.bin", "var/cache/apt/archives/a_1_all.deb",
                "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
                "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4",
                "var/cache/debconf/config.dat-old", "var/lib/dpkg/status-old", "etc/shadow-",
                "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
                "etc/ssl/private/ssl-cert-snakeoil.key", "etc/ssl/certs/ssl-cert-snakeoil.pem",
                "var/lib/rabbitmq/.erlang.cookie", "var/lib/postgresql/15/main/PG_VERSION",
                "var/lib/postgresql/15/main/global/pg_control", "etc/postgresql/15/main/postgresql.conf",
                "var/log/postgresql/postgresql-15-main.log", "run/lock/x", "tmp/junk", "var/tmp/junk"):
        _w(r, rel)
    _w(r, "var/lib/apt/lists/lock", b"")
    _w(r, "var/log/redis/redis-server.log", b"started\n", 0o640)
    _w(r, "etc/machine-id", b"0123456789abcdef0123456789abcdef\n", 0o444)
    _w(r, "etc/ssh/sshd_config", b"# kept\n")
    os.symlink("ssl-cert-snakeoil.pem", r / "etc/ssl/certs/4a6481c9.0")
    os.symlink("ca-certificates.crt", r / "etc/ssl/certs/ca.pem")
    done = normalise.normalise(r, source_date_epoch=SDE)
    left = sorted(p.relative_to(r).as_posix() for p in r.rglob("*") if not p.is_dir())
    assert left == ["etc/machine-id", "etc/ssh/sshd_config", "etc/ssl/certs/ca.pem", "var/lib/apt/lists/lock",
                    "var/log/redis/redis-server.log"]
    assert (r / "etc/machine-id").read_bytes() == b""
    assert (r / "var/log/redis/redis-server.log").read_bytes() == b""
    assert oct((r / "var/log/redis/redis-server.log").stat().st_mode & 0o7777) == "0o640"
    for d in ("run", "tmp", "var/tmp", "var/lib/postgresql/15", "etc/postgresql/15", "var/log/apt"):
        assert (r / d).is_dir() and not any((r / d).iterdir()), d
    assert "var/lib/postgresql/15/main" in done and "etc/postgresql/15/main" in done


def test_normalise_keeps_a_dbus_machine_id_symlink_and_fixes_host_files_of_a_base(tmp_path):
    r = tmp_path / "root"
    _w(r, "etc/resolv.conf", b"nameserver 10.0.0.1\n", 0o755)
    _w(r, "etc/hostname", b"buildhost\n", 0o755)
    (r / "var/lib/dbus").mkdir(parents=True)
    os.symlink("/etc/machine-id", r / "var/lib/dbus/machine-id")
    normalise.normalise(r, source_date_epoch=SDE, base=True)
    assert (r / "etc/resolv.conf").read_bytes() == b""
    assert (r / "etc/hostname").read_bytes() == b"localhost\n"
    assert (r / "etc/hostname").stat().st_mode & 0o777 == 0o644
    assert os.readlink(r / "var/lib/dbus/machine-id") == "/etc/machine-id"


def test_timestamp_pycs_get_the_clamped_source_mtime(tmp_path):
    r = tmp_path / "root"
    new = _w(r, "usr/lib/python3/dist-packages/mod.py", b"X = 1\n")
    old = _w(r, "usr/lib/python3/dist-packages/old.py", b"Y = 2\n")
    hashed = _w(r, "usr/lib/python3/dist-packages/hashed.py", b"Z = 3\n")
    os.utime(new, (SDE + 5000, SDE + 5000))
    os.utime(old, (SDE - 5000, SDE - 5000))
    os.utime(hashed, (SDE + 5000, SDE + 5000))
    pyc = {}
    for p in (new, old):
        pyc[p.stem] = Path(py_compile.compile(str(p), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP))
    pyc["hashed"] = Path(py_compile.compile(str(hashed),
                                            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH))
    before = {k: v.read_bytes() for k, v in pyc.items()}
    fixed = normalise.fix_pycs(r, SDE)
    assert fixed == [pyc["mod"].relative_to(r).as_posix()]
    _magic, flags, mtime, size = struct.unpack("<4sIII", pyc["mod"].read_bytes()[:16])
    assert (flags, mtime, size) == (0, SDE, 6)
    assert pyc["mod"].read_bytes()[16:] == before["mod"][16:]
    assert pyc["old"].read_bytes() == before["old"]
    assert pyc["hashed"].read_bytes() == before["hashed"]


# --- the chroot helper (no namespaces needed for these) ----------------------------------------


def test_mounts_under_reads_mountinfo():
    assert "/proc" in chroot.mounts_under("/proc") or chroot.mounts_under("/proc") == []
    assert chroot.mounts_under("/nonexistent-lxclayer-path") == []


def test_chroot_puts_back_resolv_conf_and_policy_rc_d_exactly(tmp_path):
    root = tmp_path / "root"
    (root / "usr/sbin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/resolv.conf").write_bytes(b"")
    os.utime(root / "etc/resolv.conf", (SDE, SDE))
    ino = (root / "etc/resolv.conf").stat().st_ino
    ch = chroot.Chroot(root, tmp_path, binds=[chroot.Bind(tmp_path, "/run/lxclayer/x")])
    ch._prepare()
    assert (root / "usr/sbin/policy-rc.d").read_bytes().endswith(b"exit 101\n")
    assert (root / "run/lxclayer/x").is_dir()
    ch._restore()
    assert not (root / "usr/sbin/policy-rc.d").exists()
    assert not (root / "run").exists() and not (root / "proc").exists()
    st = (root / "etc/resolv.conf").stat()
    assert (st.st_ino, st.st_size, int(st.st_mtime)) == (ino, 0, SDE)


# --- installed-set checks and layer trees ------------------------------------------------------


class _Ctx:
    def __init__(self, tmp_path):
        self.layer = type("L", (), {"file": tmp_path / "layers/x/layer.toml", "kind": "apt", "name": "x"})()
        self.project = type("P", (), {"root": tmp_path})()
        self.logged: list[str] = []

    def log(self, m):
        self.logged.append(m)


def test_check_installed_names_every_difference(tmp_path):
    ctx = _Ctx(tmp_path)
    pins = {"jq": Artifact(name="jq", version="1.6", arch="amd64", sha256="0" * 64),
            "libc6": Artifact(name="libc6", version="2.36-9+deb12u4", arch="amd64", sha256="1" * 64)}
    before = {"libc6": ("2.36-9+deb12u3", "amd64"), "old": ("1", "all")}
    check_installed(ctx, {"jq": ("1.6", "amd64"), "libc6": ("2.36-9+deb12u4", "amd64"), "old": ("1", "all")},
                    pins, before)
    with pytest.raises(BuildError) as e:
        check_installed(ctx, {"libc6": ("2.36-9+deb12u3", "amd64"), "old": ("1", "all"), "extra": ("2", "all")},
                        pins, before)
    msg = e.value.message()
    assert msg.startswith("layers/x/layer.toml: key packages: the installed packages differ from the lock: ")
    assert "jq 1.6 is pinned but not installed" in msg
    assert "libc6 is installed in version 2.36-9+deb12u3, pinned 2.36-9+deb12u4" in msg
    assert "extra 2 is installed but not pinned" in msg
    # a package the installation removed (Conflicts) is reported, not an error
    check_installed(ctx, {"jq": ("1.6", "amd64"), "libc6": ("2.36-9+deb12u4", "amd64")}, pins, before)
    assert ctx.logged == ["removed by the installation: old"]


def test_installed_from_status():
    status = ("Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n"
              "Package: b\nStatus: deinstall ok config-files\nVersion: 2\nArchitecture: amd64\n")
    assert installed_from_status(status) == {"a": ("1", "all")}


def test_layer_trees_leave_out_runtime_folder_contents_and_implicit_flags():
    entries = {
        "dev": Entry(path="dev", type="dir", mode=0o755),
        "dev/null": Entry(path="dev/null", type="char", mode=0o666, major=1, minor=3),
        "proc/1": Entry(path="proc/1", type="dir"),
        "devices": Entry(path="devices", type="dir", implicit=True),
    }
    assert kept("dev") and not kept("dev/null") and kept("devices/x")
    tree = layer_tree(entries)
    assert sorted(tree) == ["dev", "devices"]
    assert not tree["devices"].implicit


# --- wheels ------------------------------------------------------------------------------------


def test_wheel_tags_rank_like_pip():
    t = wheels.Target(python=(3, 11), glibc=(2, 36), machine="x86_64")
    tags = t.tags()
    assert tags[0] == "cp311-cp311-manylinux_2_36_x86_64"
    assert tags.index("cp311-cp311-manylinux2014_x86_64") < tags.index("cp311-abi3-manylinux_2_36_x86_64")
    assert tags[-1] == "py30-none-any"
    assert "cp311-cp311-manylinux_2_38_x86_64" not in tags
    assert "cp311-cp311-musllinux_1_2_x86_64" not in tags
    files = [{"filename": f} for f in (
        "m-3.0-cp311-cp311-musllinux_1_2_x86_64.whl",
        "m-3.0-cp311-cp311-manylinux_2_38_x86_64.whl",
        "m-3.0-py3-none-any.whl",
        "m-3.0-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "m-3.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        "m-3.0-cp311-cp311-manylinux_2_17_aarch64.whl",
        "m-3.0.tar.gz",
    )]
    assert wheels.best_wheel(files, t)["filename"] == "m-3.0-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
    assert wheels.best_wheel(files[:2] + files[4:], t) is None
    assert wheels.tag_of("six-1.17.0-py2.py3-none-any.whl") == "py2.py3-none-any"
    assert t.uv_platform == "x86_64-manylinux_2_36"
    # Debian 13 (glibc 2.41): uv 0.13 refuses manylinux_2_41; the platform asked of uv is capped.
    assert wheels.Target(python=(3, 13), glibc=(2, 41), machine="x86_64").uv_platform == "x86_64-manylinux_2_36"


def test_uv_compile_output_is_parsed():
    out = textwrap.dedent("""\
        annotated-types==0.8.0 \\
            --hash=sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa \\
            --hash=sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
        Pydantic_Core==2.27.1 ; python_version >= "3.8" \\
            --hash=sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc
        # via foo
        uvicorn[standard]==0.30.0 --hash=sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd
        """)
    pins = wheels.parse_compiled(out)
    assert [(p.name, p.version, len(p.hashes)) for p in pins] == [
        ("annotated-types", "0.8.0", 2), ("pydantic-core", "2.27.1", 1), ("uvicorn", "0.30.0", 1)]


def test_uv_finds_the_python_version_through_symlinks():
    from lxclayer.builders.uv import _lookup_path

    tree = {e.path: e for e in [
        Entry(path="usr", type="dir"), Entry(path="usr/bin", type="dir"),
        Entry(path="bin", type="symlink", target="usr/bin"),
        Entry(path="usr/bin/python3", type="symlink", target="python3.11"),
        Entry(path="usr/bin/python3.11", type="file", hash="x"),
        Entry(path="usr/bin/loop", type="symlink", target="loop"),
    ]}
    assert _lookup_path(tree, "/usr/bin/python3")[0] == "usr/bin/python3.11"
    assert _lookup_path(tree, "/bin/python3")[0] == "usr/bin/python3.11"
    assert _lookup_path(tree, "/usr/bin/python2") is None
    assert _lookup_path(tree, "/usr/bin/loop") is None


# --- settings validation (through the project loader, as users meet it) ------------------------

TEMPLATE = """\
name = "t"
version = "1"
source_date_epoch = 1700000000
layers = ["base", "top"]
"""
BASE = 'kind = "mmdebstrap"\nsuite = "bookworm"\n'


def project(tmp_path: Path, top: str, files: dict[str, bytes] | None = None, base: str = BASE) -> Path:
    layers = tmp_path / "layers"
    (layers / "base").mkdir(parents=True, exist_ok=True)
    (layers / "top").mkdir(parents=True, exist_ok=True)
    (layers / "template.toml").write_text(TEMPLATE)
    (layers / "base/layer.toml").write_text(base)
    (layers / "top/layer.toml").write_text(top)
    for name, data in (files or {}).items():
        (layers / "top" / name).write_bytes(data)
    return tmp_path


def load_error(tmp_path, top, files=None, base=BASE) -> DefinitionError:
    with pytest.raises(DefinitionError) as e:
        load_project(project(tmp_path, top, files, base))
    return e.value


def test_valid_layers_load(tmp_path):
    p = load_project(project(tmp_path, 'kind = "script"\nscript = "s.sh"\n', {"s.sh": b"true\n"}, base=(
        BASE + 'variant = "apt"\ncomponents = ["main", "contrib"]\npackages = ["systemd", "libc6"]\nmirrors = ['
        '"http://deb.debian.org/debian", "deb http://security.debian.org/debian-security bookworm-security main"]\n')))
    base = p.layer("base").spec
    assert base.variant == "apt" and len(mm.sources(base)) == 2
    assert mm.sources(base)[0].line() == "deb http://deb.debian.org/debian bookworm main contrib"
    assert load_project(project(tmp_path, 'kind = "apt"\npackages = ["jq"]\n')).layer("base").spec.mirrors == [
        "http://deb.debian.org/debian"]


@pytest.mark.parametrize("base,key,reason", [
    (BASE + 'varaint = "minbase"\n', "varaint", "unknown key"),
    (BASE + 'variant = "tiny"\n', "variant", "unknown variant 'tiny'"),
    (BASE + 'packages = ["curl=7.88"]\n', "packages[0]", "versions are pinned by the lockfile"),
    (BASE + 'packages = ["Curl"]\n', "packages[0]", "not a Debian package name"),
    (BASE + 'packages = ["curl", "curl"]\n', "packages", "listed twice"),
    (BASE + 'mirrors = ["deb.debian.org/debian"]\n', "mirrors[0]", "neither an http(s)"),
    (BASE + 'mirrors = ["deb http://x bookworm"]\n', "mirrors[0]", "needs components"),
    (BASE + 'mirrors = []\n', "mirrors", "at least one mirror"),
    (BASE + 'components = []\n', "components", "at least one component"),
    ('kind = "mmdebstrap"\nsuite = "Bookworm!"\n', "suite", "not a suite name"),
    ('kind = "mmdebstrap"\n', "suite", "required key is missing"),
])
def test_mmdebstrap_settings_errors_name_file_and_key(tmp_path, base, key, reason):
    err = load_error(tmp_path, 'kind = "script"\nscript = "s.sh"\n', {"s.sh": b"true\n"}, base=base)
    assert err.file == "layers/base/layer.toml"
    assert err.key == key
    assert reason in err.reason


KEY = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot really a key\n-----END PGP PUBLIC KEY BLOCK-----\n"
KEY_SHA = hashlib.sha256(KEY).hexdigest()


def apt_source(**kw) -> str:
    fields = {"uri": "https://packages.example.com/debian", "suite": "bookworm", "key": "vendor.asc",
              "key_sha256": KEY_SHA, **kw}
    body = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in fields.items() if v is not None)
    return 'kind = "apt"\npackages = ["vendor-tool"]\n\n[[sources]]\n' + body


@pytest.mark.parametrize("top,key,reason", [
    ('kind = "apt"\npackages = ["jq=1.6"]\n', "packages[0]", "versions are pinned"),
    ('kind = "apt"\npackages = ["jq"]\nrecommend = true\n', "recommend", "unknown key"),
    (apt_source(key_sha256="0" * 64), "sources[0].key_sha256",
     f"key file 'vendor.asc' has sha256 {KEY_SHA}, not the pinned {'0' * 64}: refusing it"),
    (apt_source(key_sha256=None), "sources[0].key", "pin the key: give key_sha256 or key_fingerprint"),
    (apt_source(key_sha256="ABC"), "sources[0].key_sha256", "64 lower-case hex digits"),
    (apt_source(key="../vendor.asc"), "sources[0].key", "inside the layer folder"),
    (apt_source(key="missing.asc"), "sources[0].key", "not found beside layer.toml"),
    (apt_source(uri="ftp://x"), "sources[0].uri", "not an http(s):// URL"),
    (apt_source(key_fingerprint="1234"), "sources[0].key_fingerprint", "40 (or 64) hex digit"),
    (apt_source(sign="x"), "sources[0].sign", "unknown key"),
])
def test_apt_settings_errors_and_bad_keys_are_refused(tmp_path, top, key, reason):
    err = load_error(tmp_path, top, {"vendor.asc": KEY})
    assert (err.file, err.key) == ("layers/top/layer.toml", key)
    assert reason in err.reason


def test_apt_key_pinned_by_sha256_is_accepted_and_written_with_the_source(tmp_path):
    p = load_project(project(tmp_path, apt_source(), {"vendor.asc": KEY}))
    layer = p.layer("top")
    ctx = Context(layer=layer, project=p, store=Store(tmp_path / "s"), below=[], artifacts={}, workdir=tmp_path)
    from lxclayer.builders.apt import _source_files

    files = _source_files(ctx)
    assert files["etc/apt/keyrings/top-0.asc"] == (KEY, 0o644)
    assert files["etc/apt/sources.list.d/top.list"][0] == (
        b"deb [signed-by=/etc/apt/keyrings/top-0.asc] https://packages.example.com/debian bookworm main\n")


@pytest.mark.skipif(not os.path.exists("/usr/bin/gpg"), reason="needs gpg")
def test_apt_key_pinned_by_fingerprint(tmp_path):
    import subprocess

    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key",
                    "lxclayer test <test@example.invalid>", "ed25519", "sign", "never"], check=True, capture_output=True)
    key = subprocess.run(["gpg", "--homedir", str(home), "--armor", "--export"], check=True, capture_output=True).stdout
    # key generation started an agent for this home: stop it, or it outlives the test
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)
    from lxclayer.builders.apt import gpg_fingerprints

    fpr = gpg_fingerprints(key)[0]
    assert len(fpr) == 40
    load_project(project(tmp_path, apt_source(key_sha256=None, key_fingerprint=fpr), {"vendor.asc": key}))
    other = "0" * 40
    err = load_error(tmp_path, apt_source(key_sha256=None, key_fingerprint=other), {"vendor.asc": key})
    assert err.key == "sources[0].key_fingerprint"
    assert f"holds {fpr}, not (only) the pinned key {other}: refusing it" in err.reason


@pytest.mark.parametrize("top,files,key,reason", [
    ('kind = "script"\n', {}, "script", "required key is missing"),
    ('kind = "script"\nscript = "nope.sh"\n', {}, "script", "not found beside layer.toml"),
    ('kind = "script"\nscript = "/etc/x.sh"\n', {}, "script", "inside the layer folder"),
    ('kind = "script"\nscript = "s.sh"\n[env]\n"1X" = "y"\n', {"s.sh": b""}, "env.1X", "not an environment variable"),
    ('kind = "uv"\n', {}, "uv_version", "required key is missing"),
    ('kind = "uv"\nuv_version = "latest"\n', {}, "uv_version", "not a uv version"),
    ('kind = "uv"\nuv_version = "0.13.9"\npython = "python3"\n', {}, "python", "absolute path"),
    ('kind = "uv"\nuv_version = "0.13.9"\n[venvs.a]\npath = "/opt/a"\nrequirements = "a.in"\n', {},
     "venvs.a.requirements", "not found beside layer.toml"),
    ('kind = "uv"\nuv_version = "0.13.9"\n[venvs.a]\npath = "opt/a"\nrequirements = "a.in"\n', {"a.in": b""},
     "venvs.a.path", "absolute path"),
    ('kind = "uv"\nuv_version = "0.13.9"\n[venvs.a]\npath = "/opt/a"\nrequirements = "a.in"\n'
     '[venvs.b]\npath = "/opt/a/b"\nrequirements = "a.in"\n', {"a.in": b""}, "venvs.b.path", "overlaps venv 'a'"),
    ('kind = "uv"\nuv_version = "0.13.9"\n[venvs.a]\npath = "/opt/a"\nrequirement = "a.in"\n', {"a.in": b""},
     "venvs.\"a\".requirement", "unknown key"),  # the whole key, inside a table of tables
])
def test_script_and_uv_settings_errors(tmp_path, top, files, key, reason):
    err = load_error(tmp_path, top, files)
    assert (err.file, err.key) == ("layers/top/layer.toml", key)
    assert reason in err.reason


# --- environment errors: one line, no traceback ------------------------------------------------


def _ctx(tmp_path, **kw) -> Context:
    p = load_project(project(tmp_path, 'kind = "apt"\npackages = ["jq"]\n', base=BASE + 'packages = ["curl"]\n'))
    store = Store(tmp_path / "store")
    store._init()
    (tmp_path / "work").mkdir(exist_ok=True)
    return Context(layer=p.layer("base"), project=p, store=store, below=[], artifacts=kw.pop("artifacts", {}),
                   workdir=tmp_path / "work", **kw)


def test_not_root_is_a_one_line_build_error(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(BuildError) as e:
        mm.realise(_ctx(tmp_path))
    assert e.value.message() == ("layers/base/layer.toml: building a mmdebstrap layer needs root "
                                 "(mmdebstrap runs in root mode); run lxclayer as root")


def test_missing_mmdebstrap_is_a_one_line_build_error(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: False if str(p).endswith("/mmdebstrap") else real_exists(p))
    with pytest.raises(BuildError) as e:
        mm.realise(_ctx(tmp_path))
    assert e.value.message() == ("layers/base/layer.toml: mmdebstrap is not installed on this host "
                                 "(apt-get install mmdebstrap)")


def test_resolving_offline_is_refused(tmp_path):
    with pytest.raises(BuildError, match="needs the network, and --offline is set"):
        mm.resolve(_ctx(tmp_path, offline=True))


def test_locked_build_of_a_package_the_lock_does_not_pin(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    a = Artifact(name="bash", version="5.2", arch="amd64", sha256="0" * 64, source="pool/b/bash.deb")
    with pytest.raises(BuildError, match="package 'curl' is not pinned by the lockfile"):
        mm.realise(_ctx(tmp_path, artifacts={"packages": {"bash": a}}, locked=True))
