"""`kind = "import"`: a root file system from an existing tarball (a Proxmox template, an
mmdebstrap tarball), by path or URL, pinned by sha256.

The tarball is read, never extracted, so no root is needed: each member becomes a manifest
entry and each file's bytes a blob. Downloads are kept in the store under their sha256.
"""

import bz2
import gzip
import lzma
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import zstandard

from .. import download
from ..definitions import rel
from ..errors import BuildError, UserError
from ..kinds.importtar import SHA256_HEX, Settings, validate  # noqa: F401 (what the engine asks a builder for)
from ..lock.model import Artifact
from ..manifest import Entry, sorted_entries
from ..realise.context import Context, Result
from ..scan import kept_xattr

KIND = "import"



def _name(s: Settings) -> str:
    return PurePosixPath(s.path or s.url.rsplit("/", 1)[-1]).name  # type: ignore[union-attr]


def resolve(ctx: Context) -> dict[str, dict[str, Artifact]]:
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    return {"tarballs": {_name(s): Artifact(name=_name(s), sha256=s.sha256, source=s.url or s.path or "")}}


def _where(ctx: Context) -> tuple[str, str]:
    """The layer file and the key naming the tarball a user must fix."""
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    return rel(ctx.layer.file, ctx.project.root), "path" if s.path is not None else "url"


def fetch(ctx: Context) -> Path:
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    name = _name(s)
    shown, key = _where(ctx)
    have = ctx.store.artifact(s.sha256, name=name)
    if have is not None:
        return have
    part = ctx.workdir / f"{name}.part"
    if s.path is not None:
        src = ctx.layer.dir / s.path
        with open(src, "rb") as fin, open(part, "wb") as fout:
            while block := fin.read(1 << 20):
                fout.write(block)
    else:
        if ctx.offline:
            raise BuildError(f"{name} (sha256 {s.sha256}) is not in the store and --offline is set",
                             file=shown, key=key)
        ctx.log(f"downloading {download.redact(s.url)}")  # type: ignore[arg-type]
        try:
            download.fetch([s.url], part, sha256=s.sha256)  # type: ignore[list-item]
        except download.DownloadError as e:  # the bytes are not the pinned ones: the user fixes sha256
            raise BuildError(f"cannot download {name}: {e.reason}", file=shown,
                             key="sha256" if e.kind == download.CORRUPT else key) from None
    try:
        return ctx.store.put_artifact_file(part, s.sha256, name=name)
    except UserError as e:  # the bytes are not the pinned ones: the user fixes sha256 or the file
        raise BuildError(e.reason, file=shown, key="sha256") from None


_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"), (b"BZh", "bzip2"))


def _decompressed(path: Path) -> BinaryIO:
    """The tarball's bytes, decompressed by a reader that checks the format's own checksums
    (gzip CRC and length, xz check, zstd frame checksum) when read to the end."""
    with open(path, "rb") as f:
        magic = f.read(6)
    kind = next((k for m, k in _MAGIC if magic.startswith(m)), None)
    if kind == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.open(path, "rb")  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if kind == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True,  # noqa: SIM115
                                                           closefd=True)
    return open(path, "rb")  # noqa: SIM115


# What reading a damaged, truncated or foreign tarball raises.
_UNREADABLE = (tarfile.TarError, zstandard.ZstdError, EOFError, OSError, lzma.LZMAError, zlib.error, ValueError)


def member_path(name: str) -> str | None:
    parts = [p for p in PurePosixPath(name).parts if p not in ("/", ".")]
    if any(p == ".." for p in parts):
        raise BuildError(f"archive member '{_shown(name)}' leaves the root ('..')")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BuildError(f"archive member '{_shown(name)}': the name is not UTF-8") from None
    return "/".join(parts) or None


def _shown(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_tarball(path: Path, ctx: Context, name: str = "") -> list[Entry]:
    """The tarball's members as entries. Any failure names the layer file, its key (path or
    url) and the tarball, never only its sha256."""
    shown, key = _where(ctx)
    name = name or path.name
    try:
        return _read(path, ctx)
    except BuildError as e:
        raise BuildError(f"{name}: {e.reason}", file=shown, key=key) from None
    except _UNREADABLE as e:
        raise BuildError(f"{name} is not a readable tar archive ({_reason(e)})", file=shown, key=key) from None


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, EOFError):
        return f"it ends too early: {text}"
    return text


def _read(path: Path, ctx: Context) -> list[Entry]:
    clamp = ctx.source_date_epoch
    entries: dict[str, Entry] = {}
    files: dict[str, tuple[str, int]] = {}
    stream = _decompressed(path)
    with stream, tarfile.open(fileobj=stream, mode="r|") as tf:
        members = 0
        for m in tf:
            members += 1
            p = member_path(m.name)
            if p is None:
                continue
            xattrs = {
                k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
                for k, v in sorted(m.pax_headers.items())
                if k.startswith("SCHILY.xattr.") and kept_xattr(k[len("SCHILY.xattr."):])
            }
            common = dict(path=p, mode=m.mode & 0o7777, uid=m.uid, gid=m.gid,
                          mtime=min(int(m.mtime), clamp))
            if m.isreg():
                fobj = tf.extractfile(m)
                assert fobj is not None
                data = fobj.read()
                if len(data) != m.size:
                    raise EOFError(f"member '{_shown(m.name)}' is cut short")
                h = ctx.store.put_blob(data)
                files[p] = (h, m.size)
                e = Entry(type="file", size=m.size, hash=h, xattrs=xattrs, **common)
            elif m.islnk():
                target = member_path(m.linkname)
                if target not in files:
                    raise BuildError(f"hard link '{_shown(m.name)}' to '{_shown(m.linkname)}', "
                                     "which comes later or is no file")
                h, size = files[target]
                e = Entry(type="file", size=size, hash=h, xattrs=xattrs, **common)
            elif m.isdir():
                e = Entry(type="dir", xattrs=xattrs, **common)
            elif m.issym():
                # A target that is not UTF-8 is refused; ".." is allowed here (a symlink's target
                # is resolved in the container: etc/os-release -> ../usr/lib/os-release).
                member_path("/".join("x" if part == ".." else part for part in m.linkname.split("/")))
                common["mode"] = 0o777
                e = Entry(type="symlink", target=m.linkname, **common)
            elif m.ischr() or m.isblk():
                e = Entry(type="char" if m.ischr() else "block", major=m.devmajor,
                          minor=m.devminor, **common)
            elif m.isfifo():
                e = Entry(type="fifo", **common)
            else:
                continue
            entries[p] = e
        if members == 0:
            raise BuildError("holds no files (an empty or foreign file?)")
        # Read to the end: the compressors check their CRC / checksum only there.
        while stream.read(1 << 20):
            pass
    return sorted_entries(entries.values())


def realise(ctx: Context) -> Result:
    path = fetch(ctx)
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    name = _name(s)
    ctx.log(f"reading {name}")
    entries = read_tarball(path, ctx, name)
    return Result(entries=entries, artifacts=resolve(ctx))


