"""lxclayer.check: the archive rules pct's extraction depends on."""

from __future__ import annotations

import gzip
import io
import tarfile
import time
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from lxclayer.check import Member, Violation, check_archive, check_members
from lxclayer.errors import ArchiveError, UserError

from .e2e_support import unavailable

# --- building archives ------------------------------------------------------------------------


def entry(name: str, kind: str = "file", *, uid: int = 0, gid: int = 0, data: bytes = b"",
          link: str = "", xattrs: dict[str, str] | None = None) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type = {
        "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
        "fifo": tarfile.FIFOTYPE,
    }[kind]
    ti.mode = 0o755 if kind == "dir" else 0o644
    ti.uid, ti.gid = uid, gid
    ti.mtime = 1764028800
    ti.linkname = link
    ti.size = len(data) if kind == "file" else 0
    if xattrs:
        ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    return ti, data


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def write(tmp_path: Path, name: str, entries: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    raw = tar_bytes(entries)
    if name.endswith(".gz"):
        raw = gzip.compress(raw, mtime=0)
    elif name.endswith(".zst"):
        raw = zstandard.ZstdCompressor().compress(raw)
    path = tmp_path / name
    path.write_bytes(raw)
    return path


GOOD = [
    entry("./", "dir"),
    entry("./dev", "dir"),
    entry("./dev/null", "char"),
    entry("./etc", "dir"),
    entry("./etc/hostname", data=b"ct\n"),
    entry("./tmp", "dir"),
    entry("./usr", "dir"),
    entry("./usr/bin", "dir"),
    entry("./usr/bin/ping", data=b"\x7fELF", xattrs={"security.capability": "\x01"}),
    entry("./usr/bin/ping6", "hardlink", link="./usr/bin/ping"),
    entry("./usr/lib", "dir"),
    entry("./lib", "symlink", link="usr/lib"),
    entry("./home", "dir", uid=65535, gid=65535),
    entry("./home/u", "file", xattrs={"user.note": "x"}, uid=1000, gid=1000),
]


def rules(violations: list[Violation]) -> list[tuple[str, str]]:
    return [(v.path, v.rule) for v in violations]


# --- good archives pass -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t.tar", "t.tar.gz", "t.tar.zst"])
def test_good_archive_passes(tmp_path: Path, name: str) -> None:
    assert check_archive(write(tmp_path, name, GOOD)) == []


def test_gnu_tar_archive_of_a_real_tree_passes(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("tar") is None:
        unavailable("GNU tar not installed")
    root = tmp_path / "root"
    (root / "etc" / "x").mkdir(parents=True)
    (root / "etc" / "x" / "a.conf").write_text("a\n")
    (root / "bin").symlink_to("usr/bin")
    out = tmp_path / "t.tar.gz"
    subprocess.run(["tar", "--numeric-owner", "-czf", str(out), "-C", str(root), "."],
                   check=True)
    assert check_archive(out) == []


# --- each rule, with its path ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        pytest.param(
            [entry("./", "dir"), entry("./etc", "dir"), entry("./etc/a"), entry("./etc/a")],
            [("./etc/a", "duplicate")], id="duplicate"),
        pytest.param(
            [entry("./", "dir"), entry("./tmp/x"), entry("./tmp", "dir")],
            [("./tmp", "parent-order")], id="child-before-dir"),
        pytest.param(
            [entry("./", "dir"), entry("./var/log/x")],
            [("./var/log", "missing-parent"), ("./var", "missing-parent")],
            id="missing-parents"),
        pytest.param(
            [entry("./", "dir"), entry("./etc", "dir"), entry("./etc/sda", "block"),
             entry("./etc/tty", "char"), entry("./etc/fifo", "fifo")],
            [("./etc/sda", "device-outside-dev"), ("./etc/tty", "device-outside-dev")],
            id="device-outside-dev"),
        pytest.param(
            [entry("./", "dir"), entry("./a", uid=70000), entry("./b", gid=65536)],
            [("./a", "id-range"), ("./b", "id-range")], id="uid-70000"),
        pytest.param(
            [entry("./", "dir"), entry("etc", "dir"), entry("etc/passwd")],
            [("etc", "name-prefix"), ("etc/passwd", "name-prefix")], id="no-dot-slash"),
        pytest.param(
            [entry("./", "dir"), entry("./f", xattrs={"trusted.x": "1", "user.ok": "1",
                                                     "security.selinux": "c"})],
            [("./f", "xattr-dropped"), ("./f", "xattr-dropped")], id="xattr"),
        pytest.param(
            [entry("./", "dir"), entry("./a", "symlink", link="/etc"), entry("./a/b"),
             entry("./a/c/d")],
            [("./a/b", "below-symlink"), ("./a/c/d", "below-symlink")], id="below-symlink"),
        pytest.param(
            [entry("./", "dir"), entry("./a", "symlink", link="x"), entry("./a", "dir"),
             entry("./a/f")],
            [("./a", "duplicate"), ("./a/f", "below-symlink")], id="symlink-then-dir"),
        pytest.param(
            [entry("./", "dir"), entry("./f"), entry("./f/g")],
            [("./f/g", "parent-not-dir")], id="below-file"),
        pytest.param(
            [entry("./", "dir"), entry("/etc", "dir"), entry("./../x"), entry("./a/../../b")],
            [("/etc", "unsafe-name"), ("./../x", "unsafe-name"), ("./a/../../b", "unsafe-name")],
            id="unsafe-names"),
        pytest.param(
            [entry("./", "dir"), entry("./h", "hardlink", link="./later"), entry("./later"),
             entry("./d", "dir"), entry("./h2", "hardlink", link="./d"),
             entry("./h3", "hardlink", link="../etc/shadow")],
            [("./h", "hardlink-target"), ("./h2", "hardlink-target"),
             ("./h3", "hardlink-target")],
            id="hardlink-target"),
    ],
)
def test_bad_archive_reports_path_and_rule(tmp_path: Path, entries: list, expected: list) -> None:
    path = write(tmp_path, "bad.tar.gz", entries)
    assert rules(check_archive(path)) == expected


def test_messages_explain_what_pct_does(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.tar", [entry("./", "dir"), entry("./tmp/x"),
                                       entry("./tmp", "dir"), entry("./tmp/x")])
    by_rule = {v.rule: v.message for v in check_archive(path)}
    assert "after ./tmp/x" in by_rule["parent-order"]
    assert "mode and owner are lost" in by_rule["parent-order"]
    assert "first entry" in by_rule["duplicate"]


def test_root_entry_may_be_missing_or_dot(tmp_path: Path) -> None:
    assert check_members([Member("./etc", "dir", 0, 0, 0o755)]) == []
    assert check_members([Member(".", "dir", 0, 0, 0o755), Member("./a", "file", 0, 0, 0)]) == []


def test_trailing_slash_on_directories_is_the_same_path() -> None:
    ms = [Member("./etc/", "dir", 0, 0, 0o755), Member("./etc/a", "file", 0, 0, 0o644)]
    assert check_members(ms) == []


def test_archive_name_must_match_compression(tmp_path: Path) -> None:
    zst = write(tmp_path, "t.tar.zst", GOOD)
    wrong = zst.rename(tmp_path / "t.tar.gz")
    assert rules(check_archive(wrong)) == [("t.tar.gz", "archive-name")]
    odd = wrong.rename(tmp_path / "t.img")
    assert rules(check_archive(odd)) == [("t.img", "archive-name")]


def test_multi_frame_zstd_archive_passes(tmp_path: Path) -> None:
    raw = tar_bytes(GOOD)
    cctx = zstandard.ZstdCompressor()
    path = tmp_path / "t.tar.zst"
    path.write_bytes(b"".join(cctx.compress(raw[i:i + 1000]) for i in range(0, len(raw), 1000)))
    assert check_archive(path) == []


def test_zstd_archive_starting_with_a_skippable_frame_passes(tmp_path: Path) -> None:
    # pzstd writes a skippable frame (magic 0x184D2A50) before the data frames.
    skippable = (0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"\0\0\0\0"
    path = tmp_path / "t.tar.zst"
    path.write_bytes(skippable + zstandard.ZstdCompressor().compress(tar_bytes(GOOD)))
    assert check_archive(path) == []


# --- unreadable archives -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t.tar", "t.tar.gz", "t.tar.zst"])
def test_truncated_archive_raises_archive_error(tmp_path: Path, name: str) -> None:
    big = [entry("./", "dir"), entry("./blob", data=bytes(range(256)) * 400)]
    path = write(tmp_path, name, big)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError) as e:
        check_archive(path)
    assert str(path) in str(e.value)
    assert e.value.exit_code == 2


@pytest.mark.parametrize("garbage", [b"", b"hello world\n" * 100, b"\x1f\x8bnot gzip at all",
                                     b"\x28\xb5\x2f\xfd\x00garbage"])
def test_garbage_raises_archive_error(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "g.tar.gz"
    path.write_bytes(garbage)
    with pytest.raises(ArchiveError, match="g.tar.gz"):
        check_archive(path)


def test_garbage_after_members_is_not_taken_for_the_end(tmp_path: Path) -> None:
    good = tar_bytes(GOOD)
    end = good.rstrip(b"\0")
    end += b"\0" * (-len(end) % 512)
    path = tmp_path / "t.tar"
    path.write_bytes(end + b"this is not a tar header" + b"\0" * 2048)
    with pytest.raises(ArchiveError, match="unreadable data"):
        check_archive(path)


def test_missing_file_raises_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.tar.gz"):
        check_archive(tmp_path / "nope.tar.gz")


# --- properties and speed ----------------------------------------------------------------------

_segment = st.text(alphabet="abcxyz.-_é", min_size=1, max_size=4).filter(
    lambda s: s not in (".", ".."))


@settings(max_examples=200, deadline=None)
@given(st.sets(st.lists(_segment, min_size=1, max_size=4).map(tuple), max_size=40))
def test_any_sorted_parent_first_tree_passes(paths: set[tuple[str, ...]]) -> None:
    everything = set()
    for p in paths:
        for i in range(1, len(p) + 1):
            everything.add(p[:i])
    dirs = {p[:-1] for p in everything if len(p) > 1}
    members = [Member("./", "dir", 0, 0, 0o755)] + [
        Member("./" + "/".join(p), "dir" if p in dirs else "file", 0, 0, 0o644)
        for p in sorted(everything)
    ]
    assert check_members(members) == []


@settings(max_examples=100, deadline=None)
@given(st.permutations(["./a", "./a/b", "./a/b/c", "./d", "./d/e"]))
def test_any_order_with_a_child_first_is_reported(order: list[str]) -> None:
    dirs = {"./a", "./a/b", "./d"}
    members = [Member(n, "dir" if n in dirs else "file", 0, 0, 0o755) for n in order]
    found = {v.path for v in check_members(members) if v.rule == "parent-order"}
    late = {n for i, n in enumerate(order) if any(o.startswith(n + "/") for o in order[:i])}
    assert found == late


def test_thirty_thousand_members_are_fast() -> None:
    ms = [Member("./", "dir", 0, 0, 0o755), Member("./usr", "dir", 0, 0, 0o755)]
    for i in range(300):
        ms.append(Member(f"./usr/d{i}", "dir", 0, 0, 0o755))
        ms.extend(Member(f"./usr/d{i}/f{j}.conf", "file", 0, 0, 0o644) for j in range(100))
    # About 0.04 s on an idle machine. The bound leaves room for a busy CI runner and still
    # fails for anything quadratic in the number of paths (which takes many seconds here).
    best = min(_timed(check_members, ms) for _ in range(5))
    assert best < 0.3


def _timed(fn, arg) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    assert fn(arg) == []
    return time.perf_counter() - start
