"""Unpack a template exactly as `pct create` does for an unprivileged container."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

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
