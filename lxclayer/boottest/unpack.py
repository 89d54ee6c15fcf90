"""Unpack a template exactly as `pct create` does for an unprivileged container."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from ..beneath import DIR_FLAGS, Escape, open_dir
from ..errors import ArchiveError, UserError

ID_MAP = "0:100000:65536"
SUBID_LINE = "root:100000:65536"
MAPPED_ROOT = 100000

# Compression is chosen from the file name only, like PVE does.
COMPRESSION = {
    ".tar.gz": ["-z"],
    ".tar.xz": ["-J"],
    ".tar.zst": ["--zstd"],
    ".tar.bz2": ["-j"],
    ".tar": [],
}
DECOMPRESSOR = {".tar.gz": "gzip", ".tar.xz": "xz", ".tar.zst": "zstd", ".tar.bz2": "bzip2"}


def archive_suffix(archive: Path) -> str:
    name = archive.name
    for suffix in (".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2", ".tar"):
        if name.endswith(suffix):
            return suffix
    raise ArchiveError(
        "not a name Proxmox reads as a template: it must end in .tar.zst, .tar.gz, .tar.xz, "
        ".tar.bz2 or .tar (the compression is taken from the name)",
        file=str(archive),
    )


def tar_command(root: Path, suffix: str) -> list[str]:
    """The command PVE runs, reading the archive on standard input."""
    return [
        "lxc-usernsexec", "-m", f"u:{ID_MAP}", "-m", f"g:{ID_MAP}", "--",
        "tar", "xpf", "-", *COMPRESSION[suffix],
        "--totals", "--one-file-system", "-p", "--sparse", "--numeric-owner", "--acls",
        "--xattrs", "--xattrs-include=user.*", "--xattrs-include=security.capability",
        "--warning=no-file-ignored", "--warning=no-xattr-write",
        "-C", str(root), "--skip-old-files", "--anchored", "--exclude", "./dev/*",
    ]


def ensure_subids(paths: tuple[str, str] = ("/etc/subuid", "/etc/subgid")) -> list[str]:
    """Add `root:100000:65536` to /etc/subuid and /etc/subgid when missing. Returns the files
    changed."""
    changed = []
    for path in paths:
        p = Path(path)
        text = p.read_text() if p.exists() else ""
        if any(line.strip() == SUBID_LINE for line in text.splitlines()):
            continue
        if text and not text.endswith("\n"):
            text += "\n"
        p.write_text(text + SUBID_LINE + "\n")
        os.chmod(p, 0o644)
        changed.append(path)
    return changed


def tar_errors(stderr: str) -> list[str]:
    """The lines of tar's standard error that explain a failure (no totals, no noise)."""
    lines = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line or line.startswith("Total bytes read"):
            continue
        lines.append(line)
    return lines


def failure_message(archive: Path, returncode: int, stderr: str, limit: int = 3) -> str:
    """One line, in the words Proxmox would show (tar's own lines, then the exit code)."""
    errors = [e for e in tar_errors(stderr) if not e.startswith("tar: Exiting with failure")]
    shown = "; ".join(errors[:limit])
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    why = f": {shown}{more}" if shown else ""
    return (f"unpacking failed as `pct create` would fail{why}; tar exit code {returncode}")


def unpack(archive: Path, root: Path) -> float:
    """Unpack `archive` into the new folder `root` (created here, owned by the mapped root).
    Returns the bytes read according to tar's totals, or 0 when unknown."""
    from ..outputs import format_of

    if format_of(archive) == "oci":
        return unpack_oci(archive, root)
    suffix = archive_suffix(archive)
    tool = DECOMPRESSOR.get(suffix)
    # Without the zstd program, decompress here (python zstandard) and give tar the plain
    # stream: the same result as `tar --zstd`, which only runs `zstd -d` itself.
    python_zstd = suffix == ".tar.zst" and not _which("zstd")
    if tool and not python_zstd and not _which(tool):
        package = {"xz": "xz-utils"}.get(tool, tool)
        raise UserError(f"{tool} is needed to read {archive.name} (install Debian's {package} package)")
    try:
        f = open(archive, "rb")
    except OSError as e:
        raise ArchiveError(f"cannot read the archive: {e.strerror}", file=str(archive)) from None
    with f:
        if not os.path.isfile(archive):
            raise ArchiveError("not a regular file", file=str(archive))
        root.mkdir(mode=0o755)
        os.chown(root, MAPPED_ROOT, MAPPED_ROOT)
        if python_zstd:
            returncode, stderr = _tar_from_zstd(f, tar_command(root, ".tar"))
        else:
            proc = subprocess.run(tar_command(root, suffix), stdin=f, capture_output=True,
                                  text=True, errors="replace", check=False)
            returncode, stderr = proc.returncode, proc.stderr
    if returncode != 0:
        raise ArchiveError(failure_message(archive, returncode, stderr), file=str(archive))
    return _tar_total(stderr)


def _tar_total(stderr: str) -> float:
    """The bytes tar read, from its `--totals` line (0 when absent)."""
    for line in stderr.splitlines():
        if line.startswith("Total bytes read:"):
            try:
                return float(line.split(":", 1)[1].split()[0])
            except (ValueError, IndexError):
                return 0.0
    return 0.0


def _which(name: str) -> bool:
    return shutil.which(name) is not None


def _tar_from_zstd(f, argv: list[str]) -> tuple[int, str]:
    import zstandard

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        assert proc.stdin is not None
        problem = ""
        try:
            zstandard.ZstdDecompressor().copy_stream(f, proc.stdin)
        except BrokenPipeError:
            pass
        except zstandard.ZstdError as e:
            problem = f"zstd: {e}\n"
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        code = proc.wait()
        err.seek(0)
        stderr = problem + err.read().decode(errors="replace")
    return (code or (2 if problem else 0)), stderr


# --- OCI images, as Proxmox VE 9.1 unpacks them --------------------------------------------------

# Layer media types PVE applies (others are skipped, as it does), and tar's flag for each.
OCI_LAYERS = {
    "application/vnd.oci.image.layer.v1.tar": [],
    "application/vnd.oci.image.layer.v1.tar+gzip": ["-z"],
    "application/vnd.oci.image.layer.v1.tar+zstd": ["--zstd"],
    "application/vnd.oci.image.layer.nondistributable.v1.tar": [],
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": ["-z"],
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": ["--zstd"],
}
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def oci_layer_command(root: Path, flags: list[str]) -> list[str]:
    """tar for one image layer, in the container's user namespace: owners, modes and xattrs kept,
    whiteout markers not written (they were applied before), /dev left to LXC as pct does."""
    return [
        "lxc-usernsexec", "-m", f"u:{ID_MAP}", "-m", f"g:{ID_MAP}", "--",
        "tar", "xpf", "-", *flags,
        "--totals", "--one-file-system", "-p", "--numeric-owner", "--acls",
        "--xattrs", "--xattrs-include=user.*", "--xattrs-include=security.capability",
        "--warning=no-file-ignored", "--warning=no-xattr-write",
        "-C", str(root), "--anchored", "--exclude", "dev/*", "--exclude", "./dev/*",
        "--no-anchored", "--wildcards", "--exclude", f"{WHITEOUT}*",
    ]


def _parts(name: str, archive: Path) -> list[str]:
    """The components of a whiteout's target; ArchiveError when it leaves the root."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or any("\0" in p for p in parts):
        raise ArchiveError(f"whiteout {name!r} leaves the root file system", file=str(archive))
    return parts


def _open_parent(root_fd: int, parts: list[str], name: str, archive: Path) -> int | None:
    """A descriptor of the directory holding the whiteout's target, walked from the root one
    component at a time without following a symlink; None when a directory on the way is
    missing (nothing to delete). ArchiveError when the way passes through a symlink (a layer
    must not delete what is not in the container)."""
    fd = os.dup(root_fd)
    for p in parts:
        try:
            nxt = open_dir(p, fd)
        except FileNotFoundError:
            os.close(fd)
            return None
        except Escape:
            os.close(fd)
            raise ArchiveError(f"whiteout {name!r} passes through the symlink or file {p!r}",
                               file=str(archive)) from None
        os.close(fd)
        fd = nxt
    return fd


def _remove_at(dir_fd: int, name: str) -> None:
    """Remove `name` in the open directory `dir_fd` (a directory with all below it), never
    following a symlink."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _apply_whiteouts(blob, flags: list[str], root: Path, archive: Path) -> None:
    """Delete what the layer's whiteouts name, before the layer is unpacked (as PVE does),
    beneath `root` only: resolved by directory descriptors, never through a symlink or `..`."""
    import tarfile

    mode = {"-z": "r|gz", "--zstd": None}.get(flags[0] if flags else "", "r|")
    if mode is None:
        import zstandard

        blob = zstandard.ZstdDecompressor().stream_reader(blob)
        mode = "r|"
    root_fd = os.open(root, DIR_FLAGS)
    try:
        with tarfile.open(fileobj=blob, mode=mode) as tf:
            for m in tf:
                head, _, base = m.name.rstrip("/").rpartition("/")
                if not base.startswith(WHITEOUT):
                    continue
                dirs = _parts(head, archive)
                if base == OPAQUE:
                    fd = _open_parent(root_fd, dirs[:-1], m.name, archive)
                    if fd is not None and dirs:  # the folder itself: emptied only if it is one
                        parent = fd
                        try:
                            fd = open_dir(dirs[-1], parent)
                        except (FileNotFoundError, Escape):
                            fd = None
                        finally:
                            os.close(parent)
                    if fd is not None:
                        try:
                            for child in os.listdir(fd):
                                _remove_at(fd, child)
                        finally:
                            os.close(fd)
                    continue
                target = base[len(WHITEOUT):]
                if target in ("", ".", "..") or "\0" in target:
                    raise ArchiveError(f"whiteout {m.name!r} leaves the root file system", file=str(archive))
                fd = _open_parent(root_fd, dirs, m.name, archive)
                if fd is not None:
                    try:
                        _remove_at(fd, target)
                    finally:
                        os.close(fd)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ArchiveError(f"a layer does not read as a tar: {e}", file=str(archive)) from None
    finally:
        os.close(root_fd)


def unpack_oci(archive: Path, root: Path) -> float:
    """Unpack an OCI image layout tar the way PVE 9.1 does: the first manifest of index.json,
    its layers in `rootfs.diff_ids` order, each layer's whiteouts applied before it is
    unpacked, everything inside the container's user namespace. Returns the bytes unpacked."""
    from ..oci.layout import read_layout

    layout = read_layout(archive)  # ArchiveError when PVE would not take it as an image
    root.mkdir(mode=0o755)
    os.chown(root, MAPPED_ROOT, MAPPED_ROOT)
    total = 0.0
    with open(archive, "rb") as f:
        for d in layout.manifest.layers:
            flags = OCI_LAYERS.get(d.media_type)
            if flags is None:
                continue  # PVE applies only tar layers
            _apply_whiteouts(layout.blob(f, d.digest), flags, root, archive)
            with tempfile.TemporaryFile() as err:
                proc = subprocess.Popen(oci_layer_command(root, flags), stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=err)
                assert proc.stdin is not None
                try:
                    for data in layout.blob(f, d.digest).chunks():
                        proc.stdin.write(data)
                except BrokenPipeError:
                    pass
                finally:
                    with contextlib.suppress(BrokenPipeError):
                        proc.stdin.close()
                code = proc.wait()
                err.seek(0)
                stderr = err.read().decode(errors="replace")
            if code != 0:
                raise ArchiveError(f"layer {d.digest}: " + failure_message(archive, code, stderr), file=str(archive))
            total += _tar_total(stderr)
    return total
