"""Deterministic tar headers (POSIX pax) for manifest entries.

Written by hand rather than with :mod:`tarfile` so that every byte is ours to decide: names
start with `./`, owners are numeric with empty user and group names, there is no atime or
ctime, and binary xattrs (`security.capability`) are written the way GNU tar reads them.
"""

from __future__ import annotations

import struct

from .manifest import Entry

BLOCK = 512
RECORD = 20 * BLOCK  # GNU tar's default record size: the archive is padded to a multiple

_TYPEFLAG = {"file": b"0", "symlink": b"2", "char": b"3", "block": b"4", "dir": b"5", "fifo": b"6"}
_MAX_OCTAL_8 = 0o7777777
_MAX_OCTAL_12 = 0o77777777777


def member_name(e: Entry) -> str:
    return f"./{e.path}/" if e.type == "dir" else f"./{e.path}"


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode() + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n += 1
    return str(n).encode() + body


_HDR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")


def _header(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
            linkname: bytes = b"", major: int = 0, minor: int = 0) -> bytes:
    h = _HDR.pack(name, b"%07o\0" % mode, b"%07o\0" % uid, b"%07o\0" % gid, b"%011o\0" % size,
                  b"%011o\0" % mtime, b"        ", typeflag, linkname, b"ustar\x0000", b"", b"",
                  b"%07o\0" % major, b"%07o\0" % minor, b"")
    return h[:148] + b"%06o\0 " % sum(h) + h[156:]


def header_size(e: Entry) -> int:
    """len(header(e)), without building it for the common case of a plain ustar header."""
    if not e.xattrs and len(e.path) < 96 and len(e.target) < 100 and e.path.isascii() and e.target.isascii():
        if e.size <= _MAX_OCTAL_12 and 0 <= e.mtime <= _MAX_OCTAL_12:
            return BLOCK
    return len(header(e))


def header(e: Entry) -> bytes:
    """The header block(s) of an entry: a pax extended header where ustar cannot say it all."""
    name = member_name(e).encode("utf-8", "surrogateescape")
    link = e.target.encode("utf-8", "surrogateescape")
    size = e.size if e.type == "file" else 0
    pax: list[bytes] = []
    if len(name) > 100 or not name.isascii():
        pax.append(_pax_record("path", name))
        name = name[:100]
    if len(link) > 100 or not link.isascii():
        pax.append(_pax_record("linkpath", link))
        link = link[:100]
    if size > _MAX_OCTAL_12:
        pax.append(_pax_record("size", str(size).encode()))
    mtime = e.mtime
    if not 0 <= mtime <= _MAX_OCTAL_12:
        pax.append(_pax_record("mtime", str(mtime).encode()))
        mtime = 0
    for key, value in sorted(e.xattrs.items()):
        pax.append(_pax_record(f"SCHILY.xattr.{key}", value))
    out = b""
    if pax:
        body = b"".join(pax)
        out = _header(b"././@PaxHeader", 0o644, 0, 0, len(body), mtime, b"x")
        out += body + b"\0" * (-len(body) % BLOCK)
    out += _header(name, e.mode, e.uid, e.gid, size if size <= _MAX_OCTAL_12 else 0, mtime,
                   _TYPEFLAG[e.type], link, e.major, e.minor)
    return out


def plain_header(name: str, size: int, mtime: int, *, directory: bool = False) -> bytes:
    """A ustar header for a member that is not a template path (the OCI layout's files):
    owner 0:0, mode 0644 (0755 for a directory), the name as given."""
    return _header(name.encode(), 0o755 if directory else 0o644, 0, 0, size, mtime,
                   b"5" if directory else b"0")


def root_header(mtime: int) -> bytes:
    return _header(b"./", 0o755, 0, 0, 0, mtime, b"5")


def trailer(length_so_far: int) -> bytes:
    """Two zero blocks, then zeros up to the end of the record."""
    end = length_so_far + 2 * BLOCK
    return b"\0" * (2 * BLOCK + (-end % RECORD))
