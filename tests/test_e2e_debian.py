"""End to end: real Debian 12 layers (mmdebstrap, apt, uv, script) built as root from the
network, twice into empty stores, compared bit for bit; and the ways such a build fails.

Needs root, mmdebstrap, unshare and network access to deb.debian.org and PyPI: skipped when
missing, a failure under LXCLAYER_REQUIRE_E2E=1. The two cold builds are shared by the tests
of this module (a session fixture); everything else reuses their stores.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lxclayer.build import Mode, build
from lxclayer.debian.chroot import mounts_under
from lxclayer.debian.deb822 import paragraphs
from lxclayer.definitions import load_project
from lxclayer.errors import BuildError
from lxclayer.lock import toml as locktoml
from lxclayer.manifest import merge
from lxclayer.store import Store

from .conftest import run_cli
from .e2e_support import require_root, require_tools, unavailable

pytestmark = pytest.mark.e2e

SDE = 1700000000
TEMPLATE = """\
name = "deb-e2e"
version = "1.0"
arch = "amd64"
formats = ["tar.zst"]
source_date_epoch = 1700000000
layers = {layers}
"""
BASE = """\
kind = "mmdebstrap"
suite = "bookworm"
variant = "minbase"
packages = ["ca-certificates"]
"""
TOOLS = 'kind = "apt"\nrequires = ["base"]\npackages = ["jq", "python3"]\n'
PY = """\
kind = "uv"
requires = ["tools"]
uv_version = "0.13.9"

[venvs.app]
path = "/opt/app"
requirements = "app.in"
"""
SETUP = 'kind = "script"\nrequires = ["base"]\nscript = "setup.sh"\n'
SETUP_SH = """\
set -eu
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin lxtest
echo "made in a chroot" > /etc/lxclayer-e2e
# What follows the caller's umask, TZ and locale unless the run is hermetic (issue 10 item 2).
cat > /etc/lxclayer-cat <<EOF
written by cat at $(date -d @1700000000 +%H:%M) ($(locale | sed -n 's/^LC_ALL=//p'))
EOF
mkdir /var/lib/lxclayer-dir
touch /var/lib/lxclayer-dir/stamp
"""
CONF = 'kind = "files"\nrequires = ["setup"]\n'
IMPORTED = 'kind = "import"\npath = "extra.tar"\nsha256 = "{sha}"\n'


def _extra_tar() -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("./opt/imported.txt")
        ti.size, ti.mode, ti.mtime = 9, 0o644, 1600000000
        tf.addfile(ti, io.BytesIO(b"imported\n"))
    return buf.getvalue()


class HostileCaller:
    """What a user's shell may have that must not reach a build: umask, TZ, locale, cwd."""

    def __init__(self, umask: int, cwd: Path, **env: str):
        self.umask, self.cwd, self.env = umask, cwd, env

    def __enter__(self):
        self.old = (os.umask(self.umask), os.getcwd(), {k: os.environ.get(k) for k in self.env})
        os.environ.update(self.env)
        self.cwd.mkdir(parents=True, exist_ok=True)
        os.chdir(self.cwd)

    def __exit__(self, *exc):
        umask, cwd, env = self.old
        os.umask(umask)
        os.chdir(cwd)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_project(root: Path, layers: dict[str, dict[str, str]], order: list[str]) -> Path:
    (root / "layers").mkdir(parents=True, exist_ok=True)
    (root / "layers/template.toml").write_text(TEMPLATE.format(layers=order).replace("'", '"'))
    for name, files in layers.items():
        d = root / "layers" / name
        d.mkdir(parents=True, exist_ok=True)
        for fn, text in files.items():
            (d / fn).write_text(text)
    return root


def _network() -> bool:
    for host, port in (("deb.debian.org", 80), ("pypi.org", 443)):
        try:
            socket.create_connection((host, port), timeout=10).close()
        except OSError:
            return False
    return True


def _guard() -> None:
    require_root()
    require_tools("mmdebstrap", "unshare", "apt-get", "dpkg-query", "chroot")
    if not _network():
        unavailable("needs network access to deb.debian.org and pypi.org")


@dataclass
class Built:
    project: Path
    store_a: Path
    store_b: Path
    dist_a: Path
    dist_b: Path
    res_a: object
    res_b: object


class Log:
    def __init__(self):
        self.lines: list[str] = []

    def layer_start(self, p): ...
    def layer_done(self, p):
        self.lines.append(f"{p.name}: {p.state} in {p.seconds:.1f} s")
    def log(self, layer, m):
        self.lines.append(f"{layer}: {m}")
    def compose_start(self, *a): ...
    def compose_progress(self, *a): ...
    def compose_done(self, info): ...
    def warn(self, m):
        self.lines.append(f"warning: {m}")


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Built:
    """Two cold builds of base + apt + uv + script + files + import: normal (resolves, writes the
    lock) into an empty store A, then --locked into an empty store B; each under a caller that
    differs in umask (0077, 0002), time zone, locale and working folder. Files the script writes
    would get mode 0600 under one and 0664 under the other if the umask leaked, so equal outputs
    show that it does not (the real template's e2e test compares with a lock made under 022)."""
    _guard()
    root = tmp_path_factory.mktemp("deb-e2e")
    extra = _extra_tar()
    project = write_project(root / "project", {
        "base": {"layer.toml": BASE},
        "tools": {"layer.toml": TOOLS},
        "py": {"layer.toml": PY, "app.in": "six\nmarkupsafe\nattrs\n"},
        "setup": {"layer.toml": SETUP, "setup.sh": SETUP_SH},
        "conf": {"layer.toml": CONF},
        "imported": {"layer.toml": IMPORTED.format(sha=hashlib.sha256(extra).hexdigest())},
    }, ["base", "tools", "py", "setup", "conf", "imported"])
    (project / "layers/imported/extra.tar").write_bytes(extra)
    (project / "layers/conf/root/var/lib/lxclayer-empty").mkdir(parents=True)
    (project / "layers/conf/root/etc").mkdir(parents=True)
    (project / "layers/conf/root/etc/lxclayer-conf").write_text("conf = 1\n")
    callers = {
        "a": HostileCaller(0o077, root / "elsewhere-a", TZ="Pacific/Auckland", LANG="de_DE.UTF-8"),
        "b": HostileCaller(0o002, root / "elsewhere-b", TZ="America/St_Johns", LC_ALL="C.UTF-8"),
    }
    out = {}
    for tag, mode in (("a", Mode.NORMAL), ("b", Mode.LOCKED)):
        log = Log()
        t = time.monotonic()
        with callers[tag]:
            res = build(load_project(project), Store(root / f"store-{tag}"), mode=mode,
                        out_dir=root / f"dist-{tag}", events=log)
        print(f"\ncold build {tag} ({mode.value}): {time.monotonic() - t:.1f} s; " + "; ".join(
            ln for ln in log.lines if " in " in ln and ":" in ln and ("built" in ln or "cached" in ln)))
        out[tag] = res
    return Built(project, root / "store-a", root / "store-b", root / "dist-a", root / "dist-b", out["a"], out["b"])


def _entry(store: Path, layer: str):
    st = Store(store)
    for d in st.entries():
        e = st.lookup(d)
        if e is not None and e.meta.layer == layer:
            return st, e
    raise AssertionError(f"no layer {layer} in {store}")


def test_two_cold_builds_give_identical_layers_and_archive_bytes(built):
    a = {p.name: p.output for p in built.res_a.layers}
    b = {p.name: p.output for p in built.res_b.layers}
    assert a == b
    assert all(p.state == "built" for p in built.res_b.layers)
    (arch_a,), (arch_b,) = built.res_a.archives, built.res_b.archives
    assert arch_a.sha256 == arch_b.sha256
    assert arch_a.path.read_bytes() == arch_b.path.read_bytes()
    assert hashlib.sha256(arch_b.path.read_bytes()).hexdigest() == arch_b.sha256


def test_hermetic_outputs_under_a_hostile_caller(built):
    """Every kind built under umask 0077 and 0002, two time zones, locales and folders: the same
    outputs, and what the script wrote has the modes and text of a umask-022, UTC, C run."""
    kinds = {p.name: p.kind for p in built.res_a.layers}
    assert set(kinds.values()) == {"mmdebstrap", "apt", "uv", "script", "files", "import"}
    assert {p.name: p.output for p in built.res_a.layers} == {p.name: p.output for p in built.res_b.layers}
    tree = {e.path: e for e in merge((_entry(built.store_b, n)[1].entries for n in kinds), mtime=SDE)}
    assert tree["etc/lxclayer-cat"].mode == 0o644
    assert tree["var/lib/lxclayer-dir"].mode == 0o755
    assert tree["var/lib/lxclayer-dir/stamp"].mode == 0o644
    assert tree["var/lib/lxclayer-empty"].type == "dir"
    assert tree["opt/imported.txt"].mode == 0o644
    st, _ = _entry(built.store_b, "setup")
    assert st.read_blob(tree["etc/lxclayer-cat"].hash) == b"written by cat at 22:13 (C.UTF-8)\n"


def test_the_lock_pins_every_installed_package_and_wheel(built):
    lock = locktoml.read(built.project / "locks/deb-e2e.lock")
    st, base = _entry(built.store_a, "base")
    status = next(e for e in base.entries if e.path == "var/lib/dpkg/status")
    installed = {p["Package"]: p["Version"] for p in paragraphs(st.read_blob(status.hash).decode())
                 if p.get("Status") == "install ok installed"}
    pins = lock.layers["base"].artifacts["packages"]
    assert {n: a.version for n, a in pins.items()} == installed
    assert all(len(a.sha256) == 64 and a.source.startswith("pool/") and a.size > 0 for a in pins.values())
    tools = lock.layers["tools"].artifacts["packages"]
    assert {"jq", "python3", "libpython3.11-stdlib"} <= set(tools)
    wheels = lock.layers["py"].artifacts["wheels"]
    assert set(wheels) == {"app/six", "app/markupsafe", "app/attrs"}
    assert wheels["app/markupsafe"].arch.startswith("cp311-cp311-manylinux")
    assert lock.layers["py"].artifacts["tools"]["uv"].version == "0.13.9"


def test_layers_are_normalised_and_hold_no_instance_identity(built):
    st = Store(built.store_a)
    entries = [_entry(built.store_a, n)[1] for n in ("base", "tools", "py", "setup")]
    tree = {e.path: e for e in merge(x.entries for x in entries)}
    for gone in ("var/log/dpkg.log", "var/log/apt/history.log", "var/log/apt/term.log", "var/log/alternatives.log",
                 "var/cache/ldconfig/aux-cache", "etc/ssh/ssh_host_rsa_key", "usr/sbin/policy-rc.d",
                 "var/lib/systemd/random-seed", "opt/app/.lock"):
        assert gone not in tree, gone
    assert not [p for p in tree if p.startswith(("dev/", "proc/", "sys/", "run/", "tmp/", "var/lib/apt/lists/deb"))]
    assert not [p for p in tree if p.endswith(("uv_cache.json", "-old")) or p.startswith("etc/apt/apt.conf.d/99mm")]
    assert st.read_blob(tree["etc/resolv.conf"].hash) == b""
    assert st.read_blob(tree["etc/hostname"].hash) == b"localhost\n"
    assert all(e.mtime <= SDE for e in tree.values())
    assert st.read_blob(tree["etc/lxclayer-e2e"].hash) == b"made in a chroot\n"
    assert b"lxtest:" in st.read_blob(tree["etc/passwd"].hash)
    # every byte-compiled file of the venv is hash-based (valid whatever the mtimes)
    pycs = [e for p, e in tree.items() if p.startswith("opt/app/") and p.endswith(".pyc")]
    assert pycs
    for e in pycs:
        flags = struct.unpack("<I", st.read_blob(e.hash)[4:8])[0]
        assert flags & 1, e.path
    # the uv program is not part of the template
    assert not [p for p in tree if p.endswith("/uv") and p.startswith(("usr/", "opt/app/bin"))]


def test_apt_layer_is_only_the_difference(built):
    _, tools = _entry(built.store_a, "tools")
    paths = {e.path for e in tools.entries}
    assert "usr/bin/jq" in paths and "var/lib/dpkg/status" in paths
    assert "usr/bin/dash" not in paths and "etc/passwd" not in paths
    assert len(tools.entries) < 3000


def test_a_warm_rebuild_needs_no_network(built):
    """Store B holds every artifact: with the upper layers taken out, a --locked --offline build
    rebuilds them (from the store's .debs and wheels, in chroots without network) identically."""
    st = Store(built.store_b)
    for d in list(st.entries()):
        if st.lookup(d).meta.layer in ("tools", "py", "setup"):
            st.remove_entry(d)
    res = build(load_project(built.project), st, mode=Mode.LOCKED, offline=True, out_dir=built.dist_b)
    assert [p.state for p in res.layers] == ["cached", "built", "built", "built", "cached", "cached"]
    assert res.archives[0].sha256 == built.res_a.archives[0].sha256
    assert mounts_under(built.store_b) == []


def test_offline_with_an_empty_store_names_the_missing_artifact(built, tmp_path):
    with pytest.raises(BuildError) as e:
        build(load_project(built.project), Store(tmp_path / "empty"), mode=Mode.LOCKED, offline=True,
              out_dir=tmp_path / "dist")
    msg = e.value.message()
    assert "\n" not in msg
    assert msg.startswith("layers/base/layer.toml: key packages: package ")
    assert "is not in the store and --offline is set" in msg
    assert list(Store(tmp_path / "empty").entries()) == []


# --- failures ----------------------------------------------------------------------------------


def _script_project(root: Path, script: str) -> Path:
    return write_project(root, {"base": {"layer.toml": BASE},
                                "setup": {"layer.toml": SETUP, "setup.sh": script}}, ["base", "setup"])


def _copy_lock(built: Built, project: Path) -> None:
    (project / "locks").mkdir(exist_ok=True)
    shutil.copy(built.project / "locks/deb-e2e.lock", project / "locks/deb-e2e.lock")


def _processes_under(path: Path) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.readlink(p / "root").startswith(str(path)):
                    out.append(int(p.name))
            except OSError:
                continue
    return out


def test_a_failing_script_leaves_no_mount_no_process_and_no_entry(built, tmp_path):
    project = _script_project(tmp_path / "p", "sleep 1000 &\necho half way\nexit 3\n")
    _copy_lock(built, project)
    st = Store(built.store_a)
    before = set(st.entries())
    with pytest.raises(BuildError) as e:
        build(load_project(project), st, out_dir=tmp_path / "dist", write_lock=False)
    assert e.value.message() == "layers/setup/layer.toml: key script: setup.sh failed with exit code 3: half way"
    assert mounts_under(built.store_a) == []
    assert _processes_under(built.store_a) == []
    assert set(st.entries()) == before
    assert not [p for p in (built.store_a / "tmp").iterdir() if p.name.startswith("build-")]


@pytest.mark.parametrize("sig,exc", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)])
def test_an_interrupted_build_leaves_no_mount(built, tmp_path, sig, exc):
    # a script of its own (never cached by another test, whatever became of that one)
    project = _script_project(tmp_path / "p", f"touch /tmp/started\nsleep 600  # {sig.name}\n")
    _copy_lock(built, project)
    st = Store(built.store_a)
    stop = threading.Event()

    def interrupt():
        while not stop.is_set():
            try:  # tmp/ and its staging folders come and go while the build runs
                started = [*(built.store_a / "tmp").glob("build-setup-*/root/tmp/started"),  # --snapshots=off
                           *(built.store_a / "tmp").glob("build-setup-*/build/upper/tmp/started")]
            except OSError:
                started = []
            if started:
                time.sleep(0.5)
                os.kill(os.getpid(), sig)
                return
            time.sleep(0.1)

    t = threading.Thread(target=interrupt, daemon=True)
    # Ctrl-C as a user's terminal delivers it: a run started in the background by a shell without
    # job control (nohup, `cmd &` in a script) inherits SIGINT ignored, and Python then never
    # raises KeyboardInterrupt.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    t.start()
    start = time.monotonic()
    try:
        with pytest.raises(exc):
            build(load_project(project), st, out_dir=tmp_path / "dist", write_lock=False)
    finally:
        stop.set()
        signal.signal(signal.SIGINT, old)
    assert time.monotonic() - start < 300
    assert mounts_under(built.store_a) == []
    assert _processes_under(built.store_a) == []


def test_a_nonexistent_package_is_a_one_line_error(built, tmp_path):
    project = write_project(tmp_path / "p", {"base": {"layer.toml": BASE.replace(
        '["ca-certificates"]', '["ca-certificates", "lxclayer-no-such-package"]')}}, ["base"])
    with pytest.raises(BuildError) as e:
        build(load_project(project), Store(tmp_path / "s"), out_dir=tmp_path / "dist")
    assert e.value.message() == ("layers/base/layer.toml: key packages: package 'lxclayer-no-such-package' "
                                 "does not exist in bookworm (main)")
    assert list(Store(tmp_path / "s").entries()) == []


def test_an_unreachable_mirror_is_exit_code_2_and_one_line(built, tmp_path):
    project = write_project(tmp_path / "p", {"base": {"layer.toml": BASE + 'mirrors = ["http://127.0.0.1:9/debian"]\n'}},
                            ["base"])
    r = run_cli("--project", str(project), "--store", str(tmp_path / "s"), "build", cwd=project)
    assert r.returncode == 2, r.stderr
    # one error line; under it only apt's own last lines, marked "  | " (docs/progress.md)
    errors = [ln for ln in r.stderr.splitlines() if "127.0.0.1:9" in ln and not ln.startswith("  | ")]
    assert len(errors) == 1 and "Traceback" not in r.stderr
    assert "layers/base/layer.toml: key mirrors: cannot fetch the index of http://127.0.0.1:9/debian bookworm" in errors[0]
    assert list(Store(tmp_path / "s").entries()) == []


def test_an_apt_source_not_signed_by_its_pinned_key_is_refused(built, tmp_path):
    if shutil.which("gpg") is None:
        unavailable("needs gpg")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key",
                    "not debian <x@example.invalid>", "ed25519", "sign", "never"], check=True, capture_output=True)
    key = subprocess.run(["gpg", "--homedir", str(home), "--armor", "--export"], check=True,
                         capture_output=True).stdout
    # key generation started an agent for this home: stop it, or it outlives the test
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)
    vendor = ('kind = "apt"\nrequires = ["base"]\npackages = ["jq"]\n\n[[sources]]\n'
              'uri = "http://deb.debian.org/debian"\nsuite = "bookworm-updates"\nkey = "vendor.asc"\n'
              f'key_sha256 = "{hashlib.sha256(key).hexdigest()}"\n')
    project = write_project(tmp_path / "p", {"base": {"layer.toml": BASE}, "vendor": {"layer.toml": vendor}},
                            ["base", "vendor"])
    (project / "layers/vendor/vendor.asc").write_bytes(key)
    _copy_lock(built, project)
    st = Store(built.store_a)
    before = set(st.entries())
    with pytest.raises(BuildError) as e:
        build(load_project(project), st, out_dir=tmp_path / "dist", write_lock=False)
    msg = e.value.message()
    assert msg.startswith("layers/vendor/layer.toml: key sources: ")
    assert "NO_PUBKEY" in msg or "not signed" in msg
    assert set(st.entries()) == before
    assert mounts_under(built.store_a) == []


# --- snapshots (issue 11) ------------------------------------------------------------------------


def _store_copy(built: Built, dest: Path, drop: tuple[str, ...] = ()) -> Store:
    """A hard-linked copy of store A without the entries of the layers `drop`, and without
    snapshots (a copy's directories have other inodes and ctimes: they would not be trusted)."""
    subprocess.run(["cp", "-al", str(built.store_a), str(dest)], check=True)
    shutil.rmtree(dest / "snapshots", ignore_errors=True)
    st = Store(dest)
    for d in list(st.entries()):
        if st.lookup(d).meta.layer in drop:
            st.remove_entry(d)
    return st


def test_program_layers_on_snapshots_and_the_old_way_give_identical_entries(built, tmp_path):
    """The fixture's builds ran on snapshots; rebuilt here with --snapshots=off (the stack below
    written out, the whole tree scanned), the apt, uv and script layers must come out the same:
    --locked checks every output against the lock, and the archive's bytes."""
    st = _store_copy(built, tmp_path / "store", drop=("tools", "py", "setup"))
    log = Log()
    res = build(load_project(built.project), st, mode=Mode.LOCKED, offline=True, out_dir=tmp_path / "dist",
                events=log, snapshots_on=False)
    assert [p.state for p in res.layers] == ["cached", "built", "built", "built", "cached", "cached"]
    assert res.archives[0].path.read_bytes() == built.res_a.archives[0].path.read_bytes()
    said = [ln for ln in log.lines if "snapshots off" in ln]
    assert said == ["warning: snapshots off (--snapshots=off): program layers are built on a full copy of the"
                    " layers below"]
    assert all(p.program_seconds > 0 for p in res.layers if p.state == "built")


EDGE = """\
rm /etc/lxclayer-e2e                                                  # a deleted file
rm -r /var/lib/lxclayer-dir && printf 'now a file' > /var/lib/lxclayer-dir   # a directory replaced by a file
chmod 0600 /etc/lxclayer-cat                                          # only a mode
chown 1:1 /etc/motd                                                   # only an owner
python3 -c "import os; os.setxattr('/etc/issue', 'user.lxclayer', b'1')"   # only an xattr
rm -r /etc/apt/apt.conf.d && mkdir /etc/apt/apt.conf.d && echo n > /etc/apt/apt.conf.d/99new  # emptied, refilled
"""


def test_deletions_replacements_and_metadata_only_changes_are_the_same_on_snapshots(built, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(built.project, project)
    (project / "layers/edge").mkdir()
    (project / "layers/edge/layer.toml").write_text('kind = "script"\nrequires = ["setup"]\nscript = "edge.sh"\n')
    (project / "layers/edge/edge.sh").write_text(EDGE)
    tpl = project / "layers/template.toml"
    tpl.write_text(tpl.read_text().replace('"setup", ', '"setup", "edge", '))
    layers = {}
    for on in (True, False):
        st = _store_copy(built, tmp_path / f"store-{on}")
        res = build(load_project(project), st, offline=True, out_dir=tmp_path / f"dist-{on}", write_lock=False,
                    snapshots_on=on)
        assert [p.name for p in res.layers if p.state == "built"] == ["edge"]  # files layers read nothing below
        layers[on] = _entry(tmp_path / f"store-{on}", "edge")[1].entries
    assert layers[True] == layers[False]
    by_path = {e.path: e for e in layers[True]}
    assert by_path["etc/lxclayer-e2e"].type == "whiteout"
    assert by_path["var/lib/lxclayer-dir"].type == "file"
    assert by_path["etc/lxclayer-cat"].mode == 0o600
    assert (by_path["etc/motd"].uid, by_path["etc/motd"].gid) == (1, 1)
    assert by_path["etc/issue"].xattrs == {"user.lxclayer": b"1"}
    assert by_path["etc/apt/apt.conf.d/99new"].type == "file"
    assert [e.type for p, e in by_path.items() if p.startswith("etc/apt/apt.conf.d/") and p != "etc/apt/apt.conf.d/99new"]
    assert set(e.type for p, e in by_path.items() if p.startswith("etc/apt/apt.conf.d/")) == {"file", "whiteout"}


def _mounts_anywhere(word: str) -> list[str]:
    """Mounts naming `word` in the mount table of any process (any namespace) on this machine."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                out += [ln for ln in (p / "mountinfo").read_text().splitlines() if word in ln]
            except OSError:
                continue
    return out


@pytest.mark.parametrize("when", ["making snapshots", "running the program"])
def test_sigkill_during_a_snapshot_build_leaves_no_mount_and_nothing_trusted(built, tmp_path, when):
    from lxclayer import snapshots

    project = _script_project(tmp_path / "p", f"touch /tmp/started\nsleep 600  # sigkill {when}\n")
    _copy_lock(built, project)
    st = _store_copy(built, tmp_path / "store")
    before = set(st.entries())
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen([sys.executable, "-m", "lxclayer", "--project", str(project), "--store",
                             str(tmp_path / "store"), "build"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if when == "making snapshots":
                hit = list((tmp_path / "store/snapshots").glob(".tmp-*/root/usr"))
            else:
                hit = list((tmp_path / "store/tmp").glob("build-setup-*/build/upper/tmp/started"))
            if hit:
                break
            assert proc.poll() is None, "the build ended before the point to kill it at"
            time.sleep(0.05)
        else:
            pytest.fail(f"never reached {when}")
        assert when != "running the program" or _mounts_anywhere(str(tmp_path / "store"))
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 20
    while (_mounts_anywhere(str(tmp_path / "store")) or _processes_under(tmp_path / "store")) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _mounts_anywhere(str(tmp_path / "store")) == []
    assert _processes_under(tmp_path / "store") == []
    assert mounts_under(tmp_path / "store") == []
    assert set(st.entries()) == before  # the killed layer was not stored
    for d in snapshots.unneeded(st, []):  # every published snapshot is whole
        entry = st.lookup(d)
        assert entry is not None and snapshots.check(st, d, entry.output) is None, d


@pytest.mark.parametrize("tamper", ["edit", "add", "remove"])
def test_a_snapshot_changed_behind_our_back_is_noticed_and_made_again(built, tmp_path, tamper):
    from lxclayer import snapshots

    st = _store_copy(built, tmp_path / "store", drop=("setup",))
    tools = _entry(tmp_path / "store", "tools")[1]
    snap = tmp_path / "store/snapshots" / tools.input
    log = Log()
    res = build(load_project(built.project), st, mode=Mode.LOCKED, offline=True, out_dir=tmp_path / "d1", events=log)
    assert not [ln for ln in log.lines if "not trusted" in ln]  # made from the store entry, trusted
    for d in list(st.entries()):
        if st.lookup(d).meta.layer == "setup":
            st.remove_entry(d)
    jq = snap / "root/usr/bin/jq"
    if tamper == "edit":
        with open(jq, "r+b") as fh:
            fh.write(b"X")  # content only, same size
    elif tamper == "add":
        (snap / "root/usr/bin/evil").write_bytes(b"#!/bin/sh\n")
    else:
        jq.unlink()
    log = Log()
    res = build(load_project(built.project), st, mode=Mode.LOCKED, offline=True, out_dir=tmp_path / "d2", events=log)
    said = [ln for ln in log.lines if "not trusted" in ln]
    assert len(said) == 1 and tools.input[:16] in said[0] and "changed since it was made" in said[0]
    assert [p.state for p in res.layers] == ["cached", "cached", "cached", "built", "cached", "cached"]
    assert snapshots.check(st, tools.input, tools.output) is None
    assert not (snap / "root/usr/bin/evil").exists()
    assert (snap / "root/usr/bin/jq").read_bytes()[:1] == b"\x7f"
