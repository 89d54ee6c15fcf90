"""Check a template archive against the rules `pct create` depends on.

Proxmox unpacks a template with GNU tar as the container's mapped root:
``tar xpf - --numeric-owner --xattrs --xattrs-include=user.* --xattrs-include=security.capability
--skip-old-files --anchored --exclude ./dev/*``. Every rule below names a way an archive can be
unpacked differently from what it says, or make `pct create` fail:

========================  ========================================================================
rule                      meaning
========================  ========================================================================
``name-prefix``           name does not start with ``./`` (``--exclude ./dev/*`` does not match it)
``unsafe-name``           absolute name, or a ``..`` component (or such a hard link target)
``duplicate``             the path appeared before: the first entry wins, this one is skipped
``parent-order``          a directory entry after something inside it: skipped, mode/owner lost
``missing-parent``        a directory with no entry at all: made as 0755 root, mode/owner lost
``parent-not-dir``        a path below a file, hard link or device: extraction fails
``below-symlink``         a path below a symlink entry: it lands wherever the symlink points
``device-outside-dev``    a char/block device outside ``./dev/``: ``Cannot mknod`` (unprivileged)
``id-range``              uid or gid outside 0..65535: ``Cannot change ownership`` (unprivileged)
``xattr-dropped``         an xattr other than ``user.*`` / ``security.capability``: dropped
``hardlink-target``       a hard link to a path that is not an earlier file entry
``archive-name``          the file name's compression does not match the bytes (pct goes by name)
========================  ========================================================================

`check_members` is streaming and keeps one small record per path; the compose step runs it on
the entries it writes. `check_layers` applies the same rules (the same `Tree`) to the layers of an
OCI image, merged as Proxmox VE 9.1 applies them (oci/layout.py reads the layers). `check_archive` reads any ``.tar.gz``/``.tar.zst``/``.tar.xz``/
``.tar.bz2``/``.tar`` (compression found from the magic bytes) in constant memory apart from
the paths it has seen.
"""

import bz2
import gzip
import lzma
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec
import zstandard

from .errors import ArchiveError

MAX_ID = 65535
KEPT_XATTRS = ("user.",)
KEPT_XATTR_NAMES = frozenset({"security.capability"})


class Member(msgspec.Struct, frozen=True):
    """One tar entry, as the tar stores it."""

    name: str
    type: str  # "file", "dir", "symlink", "hardlink", "char", "block", "fifo", "other"
    uid: int
    gid: int
    mode: int
    size: int = 0
    linkname: str = ""
    xattrs: tuple[str, ...] = ()  # xattr names


class Violation(msgspec.Struct, frozen=True):
    path: str  # the member's name as stored (for missing-parent: "./" + the directory)
    rule: str
    message: str


# Kinds of path the checker remembers. A path below a symlink is remembered as SHADOWED so that
# everything below it is reported too.
_DIR, _FILE, _SYMLINK, _OTHER, _SHADOWED = 0, 1, 2, 3, 4
_KIND = {"dir": _DIR, "file": _FILE, "hardlink": _FILE, "symlink": _SYMLINK}


_ODD_START = frozenset({".", "/"})


def _relative(name: str) -> str | None:
    """The path relative to the root ("" for the root), or None for an unsafe name."""
    rel = name.removeprefix("./")
    if rel.startswith("/"):
        return None
    if rel.startswith(".") or "/." in rel or "//" in rel:  # "." or ".." components, "a//b"
        parts = [p for p in rel.split("/") if p and p != "."]
        if ".." in parts:
            return None
        return "/".join(parts)
    return rel.rstrip("/")


def _unsafe_reason(name: str) -> str:
    if name.startswith("/"):
        return "absolute name: tar strips the leading '/' and pct's exclusions do not match it"
    return "name has a '..' component: it points outside the root file system"


def check_members(members: Iterable[Member]) -> list[Violation]:
    """Every violation of the pct extraction rules, in archive order (missing parents last)."""
    tree = Tree()
    tree.feed(members)
    return tree.finish()


def check_layers(layers: Iterable[Iterable[Member]]) -> list[Violation]:
    """The same rules over the layers of an OCI image, applied as Proxmox VE 9.1 applies them:
    one tree, bottom layer first, each layer's whiteouts before its entries (a file below a
    symlink of a lower layer, a whiteout leaving the root or passing a symlink are found)."""
    tree = Tree(oci=True)
    for n, layer in enumerate(layers, 1):
        tree.layer(layer, n)
    return tree.finish()


WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class Tree:
    """The rules, applied to a stream of tar members; state (the paths seen, and their kinds) is
    kept across calls, so that an image's layers are checked as the one tree they make.

    With `oci`, the rules that concern pct's own tar command are left out (the `./` prefix and
    its exclusions, dropped xattrs, directory order: PVE's OCI unpacker makes directories last),
    a path given again by a later layer replaces the lower one, and whiteouts delete paths."""

    def __init__(self, *, oci: bool = False):
        self.oci = oci
        self.out: list[Violation] = []
        self.seen: dict[str, int] = {"": _DIR}  # path -> kind of its FIRST entry (the one pct keeps)
        self.implied: dict[str, str] = {}  # directory without an entry yet -> first name inside it
        self.shadowed: set[str] = set()  # implied directories that lie below a symlink
        self._mine: set[str] | None = None  # OCI: the paths of the layer being read

    def finish(self) -> list[Violation]:
        for d, first_inside in self.implied.items():
            if d not in self.shadowed:  # those are reported as below-symlink already
                self.out.append(Violation("./" + d if not self.oci else d, "missing-parent",
                                          f"no entry for this directory (needed by {first_inside}): "
                                          f"{'PVE' if self.oci else 'pct'} makes it as 0755 root:root"))
        return self.out

    def layer(self, members: Iterable[Member], n: int) -> None:
        """One OCI layer: its whiteouts (PVE applies them all first), then its entries."""
        before = len(self.out)
        entries = []
        for m in members:
            base = m.name.rstrip("/").rpartition("/")[2]
            if m.type == "file" and base.startswith(WHITEOUT):
                self._whiteout(m, base)
            else:
                entries.append(m)
        self._mine = set()
        self.feed(entries)
        self._mine = None
        self.out[before:] = [Violation(v.path, v.rule, f"{v.message} [layer {n}]") for v in self.out[before:]]

    def _whiteout(self, m: Member, base: str) -> None:
        name = m.name
        rel = _relative(name)
        if rel is None:
            self.out.append(Violation(name, "unsafe-name", "whiteout " + _unsafe_reason(name)))
            return
        parent = rel.rpartition("/")[0]
        kind = self._kind_of(parent)
        if kind in (_SYMLINK, _SHADOWED):
            self.out.append(Violation(name, "below-symlink", "whiteout is below a symlink: it deletes "
                                      "wherever the symlink points"))
            return
        if base == OPAQUE:
            prefix = parent + "/" if parent else ""
            doomed = [k for k in self.seen if k and k.startswith(prefix) and k != parent]
        else:
            target = base[len(WHITEOUT):]
            if target in ("", ".", ".."):
                return  # PVE skips these
            t = f"{parent}/{target}" if parent else target
            doomed = [k for k in self.seen if k == t or k.startswith(t + "/")]
        for k in doomed:
            del self.seen[k]

    def _kind_of(self, path: str) -> int:
        """The kind of `path` or of its nearest known ancestor (a directory when none is)."""
        while True:
            known = self.seen.get(path)
            if known is not None:
                return known
            if path in self.implied:
                return _SHADOWED if path in self.shadowed else _DIR
            if not path:
                return _DIR
            path = path.rpartition("/")[0]

    def feed(self, members: Iterable[Member]) -> None:
        out = self.out
        add = out.append
        seen, implied, shadowed = self.seen, self.implied, self.shadowed
        oci, mine = self.oci, self._mine
        for m in members:
            name = m.name
            prefixed = name[:2] == "./"
            rel = name[2:] if prefixed else name
            if rel[:1] in _ODD_START or "/." in rel or "//" in rel or rel[-1:] == "/":
                rel = _relative(name)  # the slow path: ".", "..", "//", trailing "/", absolute
                if rel is None:
                    add(Violation(name, "unsafe-name", _unsafe_reason(name)))
                    continue
            if not prefixed and rel and not oci:
                add(Violation(name, "name-prefix", "name does not start with './': pct's "
                              "'--anchored --exclude ./dev/*' does not apply to it"))
            mtype = m.type
            if not (0 <= m.uid <= MAX_ID and 0 <= m.gid <= MAX_ID):
                add(Violation(name, "id-range", f"owner {m.uid}:{m.gid} is outside 0..{MAX_ID}: an "
                              "unprivileged pct create fails (Cannot change ownership)"))
            if (mtype == "char" or mtype == "block") and not rel.startswith("dev/"):
                add(Violation(name, "device-outside-dev", f"{mtype} device outside ./dev/: an "
                              "unprivileged pct create fails (Cannot mknod)"))
            if not oci:
                for x in m.xattrs:
                    if not x.startswith(KEPT_XATTRS) and x not in KEPT_XATTR_NAMES:
                        add(Violation(name, "xattr-dropped", f"xattr {x} is dropped by pct (it keeps "
                                      "only user.* and security.capability)"))
            if mtype == "hardlink":
                _check_hardlink(m, seen, add)

            if rel in seen:
                if mine is None:
                    if rel:  # a repeated root is harmless: pct never applies its metadata
                        add(Violation(name, "duplicate", "duplicate path: pct keeps the first entry "
                                      "and skips this one"))
                    continue
                if rel in mine or not rel:
                    if rel:
                        add(Violation(name, "duplicate", "duplicate path in one layer"))
                    continue
                # A later layer gives the path again: it replaces the lower one (checked below).
                # Not a lower symlink by a directory, though: PVE makes directories last, so the
                # layer's paths below it are written through the symlink.
                replaced = seen[rel]
            else:
                replaced = None
            if mine is not None:
                mine.add(rel)
            first_inside = implied.pop(rel, None)
            if first_inside is not None:
                if not oci:
                    add(Violation(name, "parent-order", f"entry comes after {first_inside}, which is "
                                  "inside it: pct has made the directory already (0755 root) and "
                                  "skips this entry, so its mode and owner are lost"))
                shadowed.discard(rel)

            # Walk up to the nearest known path; directories passed on the way are implied.
            kind = _DIR
            new_implied: list[str] = []
            parent = rel.rpartition("/")[0] if rel else None
            while parent is not None:
                known = seen.get(parent)
                if known is not None:
                    kind = known
                    break
                if parent in implied:
                    kind = _SHADOWED if parent in shadowed else _DIR
                    break
                new_implied.append(parent)
                parent = parent.rpartition("/")[0] if parent else None
            for p in new_implied:
                implied[p] = name

            kind_mine = _KIND.get(mtype, _OTHER)
            if kind == _SYMLINK or kind == _SHADOWED:
                add(Violation(name, "below-symlink", "path is below a symlink entry: pct writes "
                              "it wherever the symlink points"))
                kind_mine = _SHADOWED
                shadowed.update(new_implied)
            elif kind != _DIR:
                add(Violation(name, "parent-not-dir", "path is below an entry that is not a "
                              "directory: extraction fails"))
            if replaced == _SYMLINK and mtype == "dir":
                kind_mine = _SYMLINK
            seen[rel] = kind_mine


def _check_hardlink(m: Member, seen: dict[str, int], add: Callable[[Violation], None]) -> None:
    target = _relative(m.linkname)
    if not target:
        add(Violation(m.name, "hardlink-target", f"hard link target {m.linkname!r} is not a "
                      "path inside the root file system"))
        return
    kind = seen.get(target)
    if kind is None:
        add(Violation(m.name, "hardlink-target", f"hard link target {m.linkname} does not "
                      "appear earlier in the archive: extraction fails"))
    elif kind != _FILE:
        add(Violation(m.name, "hardlink-target", f"hard link target {m.linkname} is not a "
                      "regular file"))


# --- archives -------------------------------------------------------------------------------

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)
_SUFFIX = {".tar.gz": "gzip", ".tar.zst": "zstd", ".tar.xz": "xz", ".tar.bz2": "bzip2",
           ".tar": "none"}
_TYPES = {
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}
_XATTR = "SCHILY.xattr."
_CHUNK = 1 << 16


class ZstdReader:
    """A read-only stream over one or more zstd frames that notices a truncated last frame."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._buf = b""
        self._pos = 0
        self._in_frame = False

    def _fill(self) -> bool:
        """Decompress some more input into the buffer; False at the end of the input."""
        chunk = self._raw.read(4096)  # small input chunks bound the output of one call
        if not chunk:
            if self._in_frame:
                raise EOFError("zstd data ends inside a frame (truncated file)")
            return False
        out = []
        while chunk:
            if self._obj.eof:
                self._obj = self._dctx.decompressobj()
            out.append(self._obj.decompress(chunk))
            chunk = self._obj.unused_data if self._obj.eof else b""
        self._in_frame = not self._obj.eof
        self._buf = self._buf[self._pos:] + b"".join(out)
        self._pos = 0
        return True

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) - self._pos < n:
            if not self._fill():
                break
        end = len(self._buf) if n < 0 else self._pos + n
        out = self._buf[self._pos:end]
        self._pos = min(end, len(self._buf))
        return out


class _Tail:
    """Counts the bytes tarfile reads and where the last non-zero byte was."""

    def __init__(self, inner: BinaryIO | ZstdReader):
        self._inner = inner
        self.total = 0
        self.last_nonzero_end = 0

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        if data:
            stripped = len(data.rstrip(b"\0"))
            if stripped:
                self.last_nonzero_end = self.total + stripped
            self.total += len(data)
        return data


def compression_of(head: bytes) -> str:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    # A zstd stream may start with a skippable frame (magic 0x184D2A50..5F, little-endian), as
    # pzstd writes; zstd, GNU tar and pct read such a stream like any other.
    if len(head) >= 4 and 0x50 <= head[0] <= 0x5F and head[1:4] == b"\x2a\x4d\x18":
        return "zstd"
    return "none"


def _suffix_of(path: Path) -> str | None:
    name = path.name
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def _open_stream(raw: BinaryIO, comp: str) -> BinaryIO | ZstdReader:
    if comp == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if comp == "xz":
        return lzma.LZMAFile(raw)  # type: ignore[return-value]
    if comp == "bzip2":
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    if comp == "zstd":
        return ZstdReader(raw)
    return raw


def member_of(ti: tarfile.TarInfo) -> Member:
    if ti.isreg():
        t = "file"
    else:
        t = _TYPES.get(ti.type, "other")
    xattrs = tuple(sorted(k[len(_XATTR):] for k in ti.pax_headers if k.startswith(_XATTR)))
    return Member(ti.name, t, ti.uid, ti.gid, ti.mode, ti.size, ti.linkname, xattrs)


def iter_archive(path: Path) -> Iterator[Member]:
    """The members of a tar archive, streamed. Unreadable or corrupt -> ArchiveError."""
    f = str(path)
    try:
        raw = open(path, "rb")  # noqa: SIM115 - a generator: closed by the with below
    except OSError as e:
        raise ArchiveError(f"cannot read the archive: {e.strerror}", file=f) from None
    with raw:
        comp = compression_of(raw.read(8))
        raw.seek(0)
        tail = _Tail(_open_stream(raw, comp))
        count = 0
        try:
            with tarfile.open(fileobj=tail, mode="r|") as tf:  # type: ignore[call-overload]
                while (ti := tf.next()) is not None:
                    count += 1
                    yield member_of(ti)
                    tf.members.clear()  # streaming: do not keep every TarInfo
                end = tf.offset
            while tail.read(_CHUNK):  # only zero blocks may follow the last member
                pass
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError,
                zstandard.ZstdError, UnicodeError) as e:
            reason = str(e) or type(e).__name__
            what = "uncompressed" if comp == "none" else f"{comp}-compressed"
            raise ArchiveError(f"not a readable tar archive ({what}): {reason}",
                               file=f) from None
    if tail.last_nonzero_end > end:
        raise ArchiveError(f"not a readable tar archive: unreadable data at byte {end} "
                           f"after {count} members (corrupt or truncated)", file=f)


def check_archive(path: Path) -> list[Violation]:
    """Every violation in the archive at `path`; ArchiveError if it cannot be read."""
    path = Path(path)
    out = check_members(iter_archive(path))
    suffix = _suffix_of(path)
    with open(path, "rb") as raw:
        comp = compression_of(raw.read(8))
    if suffix is None:
        out.insert(0, Violation(path.name, "archive-name", "pct recognises a template by its "
                                "name: .tar.gz, .tar.zst, .tar.xz, .tar.bz2 or .tar"))
    elif _SUFFIX[suffix] != comp:
        out.insert(0, Violation(path.name, "archive-name", f"named {suffix} but the data is "
                                f"{comp}-compressed: pct chooses the decompressor by the name"))
    return out
