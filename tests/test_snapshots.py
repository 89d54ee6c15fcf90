"""Snapshots (issue 11): a store entry unpacked as an overlayfs layer, checked before use."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lxclayer import snapshots
from lxclayer.manifest import Entry, merge
from lxclayer.scan import scan_dir
from lxclayer.store import Store

from .e2e_support import unavailable

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="snapshots need root (owners, device nodes)")
pytestmark = needs_root
SDE = 1_700_000_000


def f(store: Store, path: str, data: bytes, **kw) -> Entry:
    return Entry(path=path, type="file", mode=kw.pop("mode", 0o644), size=len(data),
                 hash=store.put_blob(data), mtime=kw.pop("mtime", SDE - 10), **kw)


def d(path: str, **kw) -> Entry:
    return Entry(path=path, type="dir", mode=kw.pop("mode", 0o755), mtime=kw.pop("mtime", SDE - 20), **kw)


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "store").session() as s:
        yield s


def stack(store: Store) -> tuple[list[Entry], list[Entry]]:
    bottom = [
        d("etc", mode=0o750, uid=7, gid=8, xattrs={"user.k": b"v"}),
        f(store, "etc/a", b"a\n"), f(store, "etc/gone", b"x"),
        d("opt"), f(store, "opt/x", b"x"), d("var"), d("var/lib"), f(store, "var/lib/y", b"y"),
    ]
    top = [
        Entry(path="etc", type="dir", mode=0o755, mtime=SDE, implicit=True),  # changes nothing
        f(store, "etc/a", b"A\n", mode=0o600, uid=3, xattrs={"user.z": b"1"}),
        Entry(path="etc/gone", type="whiteout"),
        f(store, "opt", b"now a file"),  # a directory replaced by a file
        f(store, "var/lib/new", b"n"),  # var and var/lib are missing parents
    ]
    return bottom, top


def lower_of(entries: list[Entry]):
    tree = {e.path: e for e in merge([entries], mtime=SDE)}
    return tree.get


def snap(store: Store, name: str, entries: list[Entry], lower) -> Path:
    return snapshots.ensure(store, name, "out-" + name, lambda: entries, lower, mtime=SDE)


def test_snapshot_holds_whiteouts_as_char_0_0_and_implied_dirs_as_below(store):
    bottom, top = stack(store)
    snap(store, "b", bottom, lambda p: None)
    root = snap(store, "t", top, lower_of(bottom))
    st = os.lstat(root / "etc/gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    etc = os.lstat(root / "etc")
    assert (stat.S_IMODE(etc.st_mode), etc.st_uid, etc.st_gid) == (0o750, 7, 8)
    assert os.getxattr(root / "etc", "user.k") == b"v"
    a = os.lstat(root / "etc/a")
    assert (stat.S_IMODE(a.st_mode), a.st_uid, a.st_nlink) == (0o600, 3, 1)  # a copy, not a blob link
    assert (root / "etc/a").read_bytes() == b"A\n"


def _merged_scan(store: Store, lowers: list[Path], tmp: Path) -> dict[str, Entry]:
    """Mount the snapshots (top first) as a read-only overlay in a private mount namespace and
    scan the merged view there."""
    if shutil.which("unshare") is None:
        unavailable("unshare (util-linux) is not installed")
    mnt = tmp / "mnt"
    mnt.mkdir()
    code = (
        "import sys, msgspec\n"
        "from pathlib import Path\n"
        "from lxclayer.scan import scan_dir\n"
        "from lxclayer.store import Store\n"
        f"t = scan_dir(Path({str(mnt)!r}), Store({str(store.root)!r}), mtime_clamp={SDE})\n"
        "sys.stdout.buffer.write(msgspec.msgpack.encode(t))\n"
    )
    lowerdir = ":".join(str(p) for p in lowers)
    p = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'mount -t overlay ov -o ro,lowerdir={lowerdir},redirect_dir=off,metacopy=off,index=off,xino=off '
         f'"$1" || exit 97; exec "$2" -c "$3"', "sh", str(mnt), sys.executable, code],
        capture_output=True,
    )
    if p.returncode == 97:
        unavailable(f"overlayfs is not available here: {p.stderr.decode().strip()}")
    assert p.returncode == 0, p.stderr.decode()
    import msgspec

    return msgspec.msgpack.decode(p.stdout, type=dict[str, Entry])


def test_overlay_of_snapshots_shows_exactly_the_merged_stack(store, tmp_path):
    bottom, top = stack(store)
    lowers = [snap(store, "t", top, lower_of(bottom)), snap(store, "b", bottom, lambda p: None)]
    seen = _merged_scan(store, lowers, tmp_path)
    want = {e.path: e for e in merge([bottom, top], mtime=SDE)}
    assert "opt/x" not in seen and "etc/gone" not in seen
    # The merged view's directories mtimes are overlayfs's own; everything else must agree.
    for path, e in want.items():
        got = seen[path]
        if e.type == "dir":
            got = type(got)(**{**{k: getattr(got, k) for k in got.__struct_fields__}, "mtime": e.mtime})
            e = type(e)(**{**{k: getattr(e, k) for k in e.__struct_fields__}, "implicit": False})
        assert got == e, path
    assert set(seen) == set(want)


@pytest.mark.parametrize("tamper", ["edit", "add", "remove", "chmod", "chown", "xattr", "touch-index"])
def test_a_snapshot_changed_behind_our_back_is_noticed_and_made_again(store, tamper):
    bottom, _ = stack(store)
    root = snap(store, "b", bottom, lambda p: None)
    assert snapshots.check(store, "b", "out-b") is None
    a = root / "etc/a"
    if tamper == "edit":
        with open(a, "r+b") as fh:  # same size, content only
            fh.write(b"Z")
    elif tamper == "add":
        (root / "opt/new").write_bytes(b"")
    elif tamper == "remove":
        (root / "opt/x").unlink()
    elif tamper == "chmod":
        os.chmod(a, 0o777)
    elif tamper == "chown":
        os.chown(a, 1, 1)
    elif tamper == "xattr":
        os.setxattr(a, "user.evil", b"1")
    elif tamper == "touch-index":
        (root.parent / snapshots.INDEX).write_bytes(b"garbage")
    assert snapshots.check(store, "b", "out-b") is not None
    logs: list[str] = []
    root = snapshots.ensure(store, "b", "out-b", lambda: bottom, lambda p: None, mtime=SDE, log=logs.append)
    assert logs and "not trusted" in logs[0]
    assert (root / "etc/a").read_bytes() == b"a\n" and (root / "opt/x").exists()
    assert not (root / "opt/new").exists()
    assert snapshots.check(store, "b", "out-b") is None
    assert scan_dir(root, store, mtime_clamp=SDE)["etc/a"].mode == 0o644


def test_one_build_checks_each_snapshot_once_and_again_when_it_was_made_anew(store, monkeypatch):
    bottom, _ = stack(store)
    checks: list[str] = []
    real = snapshots.check
    monkeypatch.setattr(snapshots, "check", lambda s, i, o: checks.append(i) or real(s, i, o))
    build = snapshots.Policy()  # one build's
    root = snapshots.ensure(store, "b", "out-b", lambda: bottom, lambda p: None, mtime=SDE, checked=build.checked)
    for _ in range(3):  # the layers above it in the same build
        assert snapshots.ensure(store, "b", "out-b", lambda: bottom, lambda p: None, mtime=SDE,
                                checked=build.checked) == root
    assert checks == ["b"]
    # Removed and made again meanwhile (another build, gc): this build checks the new one.
    snapshots.remove(store, "b")
    snap(store, "b", bottom, lambda p: None)
    assert snapshots.ensure(store, "b", "out-b", lambda: bottom, lambda p: None, mtime=SDE,
                            checked=build.checked) == root
    assert checks == ["b", "b", "b"]  # snap()'s own check, then this build's
    # Asked for another output (the entry was rebuilt): checked, found wrong, made again.
    logs: list[str] = []
    root = snapshots.ensure(store, "b", "out-b2", lambda: bottom, lambda p: None, mtime=SDE, log=logs.append,
                            checked=build.checked)
    assert logs and "another output" in logs[0] and snapshots.check(store, "b", "out-b2") is None
    # The next build checks every snapshot again: a change made between builds is found.
    os.chmod(root / "etc/a", 0o777)
    logs.clear()
    snapshots.ensure(store, "b", "out-b2", lambda: bottom, lambda p: None, mtime=SDE, log=logs.append,
                     checked=snapshots.Policy().checked)
    assert logs and "not trusted" in logs[0]
    assert stat.S_IMODE(os.lstat(root / "etc/a").st_mode) == 0o644


def test_a_snapshot_of_another_output_is_not_used(store):
    bottom, _ = stack(store)
    snap(store, "b", bottom, lambda p: None)
    assert snapshots.check(store, "b", "other") == "it was made from another output"


def test_a_killed_snapshot_build_leaves_nothing_trusted_and_is_swept(store, tmp_path):
    bottom, _ = stack(store)
    script = (
        "import os, signal, sys\n"
        "from lxclayer import snapshots, materialise\n"
        "from lxclayer.store import Store\n"
        "from lxclayer.manifest import Entry\n"
        "import msgspec\n"
        "entries = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=list[Entry])\n"
        "n = int(sys.argv[2])\n"
        "real = materialise._meta_fd\n"
        "count = [0]\n"
        "def meta(p, e):\n"
        "    count[0] += 1\n"
        "    if count[0] == n: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real(p, e)\n"
        "materialise._meta_fd = meta\n"
        "snapshots.ensure(Store(sys.argv[1]), 'b', 'out-b', lambda: entries, lambda p: None, mtime=0)\n"
    )
    import msgspec

    data = msgspec.msgpack.encode(bottom)
    for n in (1, 3, 6):
        p = subprocess.run([sys.executable, "-c", script, str(store.root), str(n)], input=data,
                           capture_output=True)
        assert p.returncode == -9, p.stderr.decode()
        assert snapshots.check(store, "b", "out-b") == "missing"
        assert list(snapshots.snapshots_dir(store).glob(".tmp-*"))
    snap(store, "b", bottom, lambda p: None)
    assert not list(snapshots.snapshots_dir(store).glob(".tmp-*"))
    assert snapshots.check(store, "b", "out-b") is None


def test_gc_removes_snapshots_with_their_entries_and_reports_their_size(project_dir, store_dir):
    from lxclayer.build import build
    from lxclayer.definitions import load_project

    from .conftest import run_cli

    build(load_project(project_dir), Store(store_dir))
    store = Store(store_dir)
    live = sorted(p.name for p in (store_dir / "layers").iterdir())
    with store.session():
        bottom, _ = stack(store)
        for name in (live[0], "0" * 64):  # one an entry the lock names, one nothing names
            snap(store, name, bottom, lambda p: None)
    dry = run_cli("--project", str(project_dir), "--store", str(store_dir), "gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "snapshots: would free 1; the kept ones take" in dry.stdout
    assert snapshots.check(store, "0" * 64, "out-" + "0" * 64) is None
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "gc")
    assert r.returncode == 0, r.stderr
    assert "snapshots: freed 1" in r.stdout
    assert snapshots.check(store, "0" * 64, "out-" + "0" * 64) == "missing"
    assert snapshots.check(store, live[0], "out-" + live[0]) is None


CHANGES = r"""
set -e
cd "$1"
rm etc/gone                      # a deleted file
rm -r opt && printf 'file' > opt # a directory replaced by a file
chmod 0600 var/lib/y             # only a mode
chown 5:6 etc/a                  # only an owner
setfattr -n user.only -v 1 var/lib 2>/dev/null || python3 -c "import os; os.setxattr('var/lib', 'user.only', b'1')"
rm -r srv && mkdir srv && printf 'n' > srv/new   # a directory emptied and refilled (opaque)
mkdir -p usr/new/deep && printf 'd' > usr/new/deep/f
touch -h -d @1600000000 etc var/lib usr usr/new usr/new/deep srv .
"""


def test_scanning_the_upper_dir_alone_gives_the_same_layer_as_scanning_the_whole_tree(store, tmp_path):
    """The old way (materialise the stack, change it, scan it all, diff) and the new way (change
    an overlay of snapshots, read its upper directory) give the same layer."""
    from lxclayer.manifest import diff, sorted_entries

    if shutil.which("unshare") is None:
        unavailable("unshare (util-linux) is not installed")
    bottom = [
        d("etc", mode=0o750, uid=7, gid=8), f(store, "etc/a", b"a\n"), f(store, "etc/gone", b"x"),
        d("opt"), d("opt/sub"), f(store, "opt/sub/x", b"x"), d("var"), d("var/lib"),
        f(store, "var/lib/y", b"y"), d("srv"), f(store, "srv/old", b"o"), d("usr"),
    ]
    base = {e.path: e for e in merge([bottom], mtime=SDE)}
    # the old way
    from lxclayer.materialise import materialise

    real = tmp_path / "real"
    materialise(merge([bottom], mtime=SDE), real, store)
    subprocess.run(["sh", "-c", CHANGES, "sh", str(real)], check=True)
    old = sorted_entries(diff(base, scan_dir(real, store, mtime_clamp=SDE)))
    # the new way
    lower = snap(store, "b", bottom, lambda p: None)
    upper, work, mnt = tmp_path / "upper", tmp_path / "work", tmp_path / "mnt"
    for p in (upper, work, mnt):
        p.mkdir()
    p = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t overlay ov -o lowerdir={lower},upperdir={upper},workdir={work},"
         f'redirect_dir=off,metacopy=off,index=off,xino=off "$1" || exit 97\n' + CHANGES, "sh", str(mnt)],
        capture_output=True,
    )
    if p.returncode == 97:
        unavailable(f"overlayfs is not available here: {p.stderr.decode().strip()}")
    assert p.returncode == 0, p.stderr.decode()
    new = sorted_entries(diff(base, snapshots.upper_changes(upper, base, store, mtime_clamp=SDE)))
    assert new == old
    kinds = {e.path: e.type for e in new}
    assert kinds["etc/gone"] == "whiteout" and kinds["opt"] == "file" and kinds["srv/old"] == "whiteout"
    assert {"var/lib/y", "etc/a", "var/lib", "usr/new/deep/f"} <= set(kinds)
    assert snapshots.check(store, "b", "out-b") is None  # the program did not touch the snapshot


def test_lookup_below_agrees_with_merge(store):
    bottom, top = stack(store)
    again = [Entry(path="etc", type="dir", mode=0o700, mtime=SDE, implicit=True),  # over a real dir
             Entry(path="new", type="dir", mode=0o755, mtime=SDE, implicit=True),  # over nothing
             Entry(path="var", type="whiteout")]
    layers = [bottom, top, again]
    for n in range(1, len(layers) + 1):
        merged = {e.path: e for e in merge(layers[:n], mtime=SDE)}
        paths = set(merged) | {e.path for layer in layers for e in layer} | {"var/lib/y", "nothing/here"}
        for path in sorted(paths):
            got = snapshots.lookup_below(layers[:n], path)
            want = merged.get(path)
            if want is not None and want.implicit and got is not None:
                assert (got.type, got.mode, got.uid) == (want.type, want.mode, want.uid), path
            else:
                assert got == want, (n, path)


def test_an_adopted_upper_dir_shows_the_same_tree_as_a_snapshot_made_from_the_entries(store, tmp_path):
    """After a build on the overlay, the upper directory becomes the layer's snapshot (moved,
    not copied); stacked on the snapshots below it must show what one made from the layer's
    store entries shows, and pass the lstat check."""
    from lxclayer.manifest import diff, sorted_entries

    if shutil.which("unshare") is None:
        unavailable("unshare (util-linux) is not installed")
    bottom = [d("etc", mode=0o750, uid=7, gid=8), f(store, "etc/a", b"a\n"), f(store, "etc/gone", b"x"),
              d("opt"), d("opt/sub"), f(store, "opt/sub/x", b"x"), d("var"), d("var/lib"),
              f(store, "var/lib/y", b"y"), d("srv"), f(store, "srv/old", b"o"), d("usr"), d("dev")]
    base = {e.path: e for e in merge([bottom], mtime=SDE)}
    lower = snap(store, "b", bottom, lambda p: None)
    upper, work, mnt = tmp_path / "upper", tmp_path / "work", tmp_path / "mnt"
    for p in (upper, work, mnt):
        p.mkdir()
    extra = ("mkfifo var/lib/fifo\nmknod dev/null2 c 1 3\n"
             "python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"run.sock\")'\n")
    p = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t overlay ov -o lowerdir={lower},upperdir={upper},workdir={work},"
         f'redirect_dir=off,metacopy=off,index=off,xino=off "$1" || exit 97\n' + CHANGES.replace(
             "touch -h", extra + "touch -h"), "sh", str(mnt)],
        capture_output=True,
    )
    if p.returncode == 97:
        unavailable(f"overlayfs is not available here: {p.stderr.decode().strip()}")
    assert p.returncode == 0, p.stderr.decode()
    from lxclayer.realise.program import layer_tree

    entries = sorted_entries(diff(base, layer_tree(snapshots.upper_changes(upper, base, store, mtime_clamp=SDE))))
    assert {"var/lib/fifo", "opt", "etc/gone"} <= {e.path for e in entries}
    assert not [e for e in entries if e.path.startswith("dev/") or e.path == "run.sock"]
    adopted = snapshots.adopt(store, "t-adopted", "out", upper, mtime=SDE)
    assert not upper.exists() and snapshots.check(store, "t-adopted", "out") is None
    made = snap(store, "t-made", entries, lambda path: base.get(path))
    (tmp_path / "a").mkdir()
    (tmp_path / "m").mkdir()
    via_adopted = _merged_scan(store, [adopted, lower], tmp_path / "a")
    via_made = _merged_scan(store, [made, lower], tmp_path / "m")
    assert via_adopted == via_made
    assert "run.sock" not in os.listdir(adopted) and not os.path.lexists(adopted / "dev/null2")


@pytest.mark.parametrize("flag,env,enabled,reason", [
    (None, None, True, ""), (None, "off", False, "LXCLAYER_SNAPSHOTS=off"), (None, "on", True, ""),
    (False, None, False, "--snapshots=off"), (True, "off", True, ""),
])
def test_snapshots_are_on_unless_the_flag_or_the_environment_says_off(monkeypatch, flag, env, enabled, reason):
    if env is None:
        monkeypatch.delenv(snapshots.ENV, raising=False)
    else:
        monkeypatch.setenv(snapshots.ENV, env)
    said: list[str] = []
    p = snapshots.Policy.choose(flag, said.append)
    assert (p.enabled, p.reason) == (enabled, reason)
    p.tell()
    p.tell()
    assert said == ([] if enabled else [f"snapshots off ({reason}): program layers are built on a full copy of"
                                        " the layers below"])


def test_an_overlay_that_cannot_be_mounted_is_overlay_unavailable_with_the_reason(tmp_path):
    from lxclayer.overlay import OverlayUnavailable, StackMount

    if shutil.which("unshare") is None:
        unavailable("unshare (util-linux) is not installed")
    m = StackMount(tmp_path, [tmp_path / "no-such-lower"], tmp_path / "upper", tmp_path / "work", tmp_path / "mnt")
    with pytest.raises(OverlayUnavailable) as e:
        m.__enter__()
    assert "mount" in str(e.value) or "No such file" in str(e.value)
    said: list[str] = []
    p = snapshots.Policy(say=said.append)
    p.off(f"overlayfs cannot be mounted here: {e.value}")
    p.tell()
    assert len(said) == 1 and said[0].startswith("snapshots off (overlayfs cannot be mounted here: ")


def test_a_mounted_stack_is_seen_by_this_process_and_gone_afterwards(store, tmp_path):
    from lxclayer.debian.chroot import mounts_under
    from lxclayer.overlay import StackMount

    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        unavailable("unshare/nsenter (util-linux) are not installed")
    bottom, _ = stack(store)
    lower = snap(store, "b", bottom, lambda p: None)
    m = StackMount(snapshots.snapshots_dir(store), [lower], tmp_path / "upper", tmp_path / "work", tmp_path / "mnt")
    with m:
        assert (m.view / "etc/a").read_bytes() == b"a\n"
        (m.view / "etc/new").write_bytes(b"n")  # into the upper directory, not the snapshot
        assert mounts_under(tmp_path) == []  # nothing in this process's namespace
        r = subprocess.run([*m.enter, "cat", str(m.mountpoint / "etc/new")], capture_output=True)
        assert r.stdout == b"n", r.stderr
        pid = m.pid
    assert (tmp_path / "upper/etc/new").read_bytes() == b"n"
    assert not os.path.exists(f"/proc/{pid}")
    assert snapshots.check(store, "b", "out-b") is None


def test_the_overlay_is_volatile_so_its_unmount_does_not_wait_for_the_disk(store, tmp_path):
    """Unmounting an overlay syncs the whole file system of its upper directory, unless it is
    mounted `volatile` (Linux 5.10): that sync made every program layer wait 0.2-0.3 s."""
    from lxclayer.overlay import StackMount

    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        unavailable("unshare/nsenter (util-linux) are not installed")
    if tuple(int(x) for x in os.uname().release.split(".")[:2]) < (5, 10):
        unavailable("overlayfs has no `volatile` before Linux 5.10 (lxclayer mounts without it there)")
    bottom, _ = stack(store)
    lower = snap(store, "b", bottom, lambda p: None)
    m = StackMount(snapshots.snapshots_dir(store), [lower], tmp_path / "upper", tmp_path / "work", tmp_path / "mnt")
    with m:
        mounts = [ln.split() for ln in open(f"/proc/{m.pid}/mountinfo") if " overlay " in ln]
        mine = [ln for ln in mounts if ln[4] == str(m.mountpoint)]
        assert len(mine) == 1, mounts
        options = mine[0][-1].split(",")
        assert "volatile" in options or "fsync=volatile" in options, mine[0]  # (6.x kernels say the latter)
