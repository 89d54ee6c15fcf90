"""`kind = "import"`: a root file system from an existing tarball (a Proxmox template, an
mmdebstrap tarball), by path or URL, pinned by sha256.

The tarball is read, never extracted, so no root is needed: each member becomes a manifest
entry and each file's bytes a blob. Downloads are kept in the store under their sha256.
"""

import tarfile
from pathlib import Path, PurePosixPath

import zstandard

from ..definitions import Layer, LayerSpec, rel
from ..errors import BuildError, DefinitionError
from ..lock.model import Artifact
from ..manifest import Entry, sorted_entries
from ..scan import kept_xattr
from .base import Context, Result

KIND = "import"
VERSION = 1
READS_BELOW = False

SHA256_HEX = 64


class Settings(LayerSpec, tag=KIND):
    sha256: str
    path: str | None = None  # relative to the layer folder
    url: str | None = None


def validate(layer: Layer, shown: str) -> None:
    s: Settings = layer.spec  # type: ignore[assignment]
    if (s.path is None) == (s.url is None):
        raise DefinitionError("give exactly one of `path` and `url`", file=shown, key="path")
    if len(s.sha256) != SHA256_HEX or any(c not in "0123456789abcdef" for c in s.sha256):
        raise DefinitionError("must be 64 lower-case hex digits", file=shown, key="sha256")
    if s.url is not None and not s.url.startswith(("http://", "https://", "file://")):
        raise DefinitionError("must be an http(s):// or file:// URL", file=shown, key="url")
    if s.path is not None:
        p = PurePosixPath(s.path)
        if p.is_absolute() or ".." in p.parts:
            raise DefinitionError("must be a file inside the layer folder", file=shown, key="path")
        if not (layer.dir / s.path).is_file():
            raise DefinitionError(f"file {s.path!r} not found beside layer.toml", file=shown, key="path")


def _name(s: Settings) -> str:
    return PurePosixPath(s.path or s.url.rsplit("/", 1)[-1]).name  # type: ignore[union-attr]


def resolve(ctx: Context) -> dict[str, dict[str, Artifact]]:
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    return {"tarballs": {_name(s): Artifact(name=_name(s), sha256=s.sha256, source=s.url or s.path or "")}}


def fetch(ctx: Context) -> Path:
    import urllib.error  # imported here: start-up stays light
    import urllib.request

    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    name = _name(s)
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
                             file=rel(ctx.layer.file, ctx.project.root), key="url")
        ctx.log(f"downloading {s.url}")
        try:
            with urllib.request.urlopen(s.url, timeout=60) as r, open(part, "wb") as fout:
                while block := r.read(1 << 20):
                    fout.write(block)
        except (urllib.error.URLError, OSError) as e:
            raise BuildError(f"cannot download {s.url}: {getattr(e, 'reason', e)}",
                             file=rel(ctx.layer.file, ctx.project.root), key="url") from None
    try:
        return ctx.store.put_artifact_file(part, s.sha256, name=name)
    except Exception as e:  # sha mismatch is a user error with the file named
        raise BuildError(str(e), file=rel(ctx.layer.file, ctx.project.root), key="sha256") from None


def open_tar(path: Path) -> tarfile.TarFile:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"\x28\xb5\x2f\xfd":
        stream = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True)
        return tarfile.open(fileobj=stream, mode="r|")
    return tarfile.open(path, mode="r|*")


def member_path(name: str) -> str | None:
    parts = [p for p in PurePosixPath(name).parts if p not in ("/", ".")]
    if any(p == ".." for p in parts):
        raise BuildError(f"archive member {name!r} leaves the root ('..')")
    return "/".join(parts) or None


def read_tarball(path: Path, ctx: Context) -> list[Entry]:
    clamp = ctx.source_date_epoch
    entries: dict[str, Entry] = {}
    files: dict[str, tuple[str, int]] = {}
    try:
        tf = open_tar(path)
    except (tarfile.TarError, zstandard.ZstdError, OSError) as e:
        raise BuildError(f"cannot read {path.name}: {e}") from None
    with tf:
        try:
            for m in tf:
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
                    h = ctx.store.put_blob(fobj.read())
                    files[p] = (h, m.size)
                    e = Entry(type="file", size=m.size, hash=h, xattrs=xattrs, **common)
                elif m.islnk():
                    target = member_path(m.linkname)
                    if target not in files:
                        raise BuildError(f"hard link {m.name!r} to {m.linkname!r}, which comes later or is no file")
                    h, size = files[target]
                    e = Entry(type="file", size=size, hash=h, xattrs=xattrs, **common)
                elif m.isdir():
                    e = Entry(type="dir", xattrs=xattrs, **common)
                elif m.issym():
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
        except (tarfile.TarError, zstandard.ZstdError, EOFError) as e:
            raise BuildError(f"{path.name} is not a readable tar archive: {e}") from None
    return sorted_entries(entries.values())


def realise(ctx: Context) -> Result:
    path = fetch(ctx)
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    name = _name(s)
    ctx.log(f"reading {name}")
    entries = read_tarball(path, ctx)
    return Result(entries=entries, artifacts=resolve(ctx))


