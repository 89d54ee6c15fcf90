"""`lxclayer publish`: a signed template channel, a static folder any web server can serve.

    DIR/
      <template>.tar.gz (.tar.zst)   the archives the locks record, checked against them
      <template>.tar                 the OCI images
      <template>.spdx.json           the SBOMs; <template>.intoto.json the provenance (and the
                                     signed .intoto.dsse.json when push --sign-key made one)
      aplinfo.dat, aplinfo.dat.gz    pveam's appliance index: one paragraph per archive
      aplinfo.dat.asc                detached OpenPGP signature of aplinfo.dat
      SHA512SUMS, SHA512SUMS.asc     every file above, and its signature

Signatures are made with Debian's `sq`; `sqv --keyring CERT aplinfo.dat.asc aplinfo.dat` (what
`pveam update` runs) and `sqv --keyring CERT SHA512SUMS.asc SHA512SUMS` accept them. The folder
is made beside DIR under a temporary name and put in DIR's place only when complete: a failure
(a bad key, a stale archive, a full disk) leaves the old channel as it was.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .definitions import Project
from .errors import UserError
from .fsio import atomic_write, pid_alive, rmtree
from .lock import toml as locktoml
from .lock.model import Lockfile
from .lock.toml import stack_digest
from .outputs.provenance import git_source, provenance_document, provenance_filename
from .outputs.sbom import debian_release, sbom_filename, spdx_document
from .trust import pgp

INDEX = "aplinfo.dat"
SUMS = "SHA512SUMS"
CHUNK = 1 << 20
DEFAULT_MAINTAINER = "lxclayer <https://lxclayer.dev>"
DEFAULT_INFOPAGE = "https://lxclayer.dev/templates"
# Archives pveam lists (a container's root file system); the OCI `.tar` is in SHA512SUMS only.
ROOTFS_FORMATS = ("tar.gz", "tar.zst")


@dataclass
class PublishResult:
    folder: Path
    files: list[str] = field(default_factory=list)  # every file of the channel, sorted
    templates: list[str] = field(default_factory=list)


def _digests(path: Path) -> tuple[str, str]:
    """(sha256, sha512) of a file, read once."""
    h256, h512 = hashlib.sha256(), hashlib.sha512()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(CHUNK):
            h256.update(block)
            h512.update(block)
    return h256.hexdigest(), h512.hexdigest()


def _place(src: Path, dst: Path) -> None:
    """`src` at `dst`: a hard link when on the same file system (a later build replaces dist/'s
    files by rename, so the channel's copy never changes under it), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _description(lock: Lockfile, os_name: str) -> list[str]:
    t = lock.template
    lines = [f"{t.name} {t.version}-{t.release} ({os_name}), built by lxclayer from its lock",
             f"Layers: {', '.join(lock.layers)}.",
             f"Lock stack digest: {stack_digest(lock)}.",
             f"SBOM: {sbom_filename(lock)}; SLSA provenance: {provenance_filename(lock)}."]
    return lines


def paragraph(lock: Lockfile, archive: str, sha512: str, maintainer: str, infopage: str) -> str:
    """One appliance record, fields in the order pve-manager's parser wants (Description last:
    its continuation lines run to the end of the record)."""
    t = lock.template
    os_name = debian_release(lock) or "debian"
    desc = _description(lock, os_name)
    fields = [("Package", t.name), ("Version", f"{t.version}-{t.release}"), ("Type", "lxc"),
              ("OS", os_name), ("Section", "system"), ("Maintainer", maintainer),
              ("Architecture", t.arch), ("Location", archive), ("Infopage", infopage),
              ("sha512sum", sha512)]
    for k, v in fields:
        if "\n" in v or not v.strip():
            raise UserError(f"aplinfo field {k} must be one non-empty line, got {v!r}")
    out = "".join(f"{k}: {v}\n" for k, v in fields)
    out += f"Description: {desc[0]}\n" + "".join(f" {line}\n" if line else " .\n" for line in desc[1:])
    return out


def publish(projects: list[Project], dest: Path, pgp_key: Path, *, maintainer: str = DEFAULT_MAINTAINER,
            infopage: str = DEFAULT_INFOPAGE, warn: Callable[[str], None] | None = None) -> PublishResult:
    """Write the channel for `projects` (one per template) to `dest`, replacing what was there
    (only an earlier channel: a folder without aplinfo.dat that is not empty is refused)."""
    pgp_key = Path(pgp_key)
    pgp.check_key_file(pgp_key, warn)
    dest = Path(os.path.abspath(dest))
    if dest.exists():
        if not dest.is_dir():
            raise UserError("exists and is not a folder", file=str(dest))
        if any(dest.iterdir()) and not (dest / INDEX).exists():
            raise UserError(f"not empty and not a template channel (no {INDEX}); refusing to replace it",
                            file=str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(dest)
    tmp = dest.parent / f".{dest.name}.publish-{os.getpid()}.tmp"
    if tmp.exists():
        rmtree(tmp)
    tmp.mkdir()
    result = PublishResult(folder=dest)
    try:
        paragraphs: list[tuple[str, str]] = []
        sha512s: dict[str, str] = {}  # of the archives, read once
        for project in projects:
            lock = locktoml.read(project.lock_file)
            if lock is None:
                raise UserError(f"{project.lock_file}: no lock; run `lxclayer build --template "
                                f"{project.template.name}` first")
            dist = project.root / "dist"
            for fmt, arch in sorted(lock.template.archives.items()):
                src = dist / arch.file
                if not src.is_file():
                    raise UserError(f"{src}: missing; run `lxclayer build --locked --template "
                                    f"{lock.template.name}` first")
                sha256, sha512 = _digests(src)
                if sha256 != arch.sha256:
                    raise UserError(f"{src}: sha256 {sha256} is not the lock's {arch.sha256}; run "
                                    f"`lxclayer build --locked --template {lock.template.name}`")
                _place(src, tmp / arch.file)
                sha512s[arch.file] = sha512
                if fmt in ROOTFS_FORMATS:
                    paragraphs.append((arch.file, paragraph(lock, arch.file, sha512, maintainer, infopage)))
            atomic_write(tmp / sbom_filename(lock), spdx_document(lock))
            prov = dist / provenance_filename(lock)
            prov_data = prov.read_bytes() if prov.is_file() else provenance_document(
                lock, git_source(project.root, exclude=[dist]))
            atomic_write(tmp / provenance_filename(lock), prov_data)
            signed = dist / (provenance_filename(lock).removesuffix(".json") + ".dsse.json")
            if signed.is_file():
                from .trust import dsse

                try:  # only an envelope of this very statement
                    import base64

                    if base64.b64decode(dsse.decode(signed.read_bytes()).payload) == prov_data:
                        _place(signed, tmp / signed.name)
                except Exception:  # noqa: BLE001 - a stale or damaged envelope is left out
                    pass
            result.templates.append(lock.template.name)
        if not paragraphs:
            raise UserError("nothing to publish: no tar.gz or tar.zst archive in the locks")
        index = "\n".join(p for _, p in sorted(paragraphs)).encode()
        (tmp / INDEX).write_bytes(index)
        (tmp / (INDEX + ".gz")).write_bytes(gzip.compress(index, 9, mtime=0))
        (tmp / (INDEX + ".asc")).write_bytes(pgp.sign_detached(pgp_key, tmp / INDEX))
        sums = "".join(f"{sha512s.get(n) or _digests(tmp / n)[1]}  {n}\n" for n in sorted(os.listdir(tmp)))
        (tmp / SUMS).write_text(sums)
        (tmp / (SUMS + ".asc")).write_bytes(pgp.sign_detached(pgp_key, tmp / SUMS))
        for n in os.listdir(tmp):
            os.chmod(tmp / n, 0o644)
        os.chmod(tmp, 0o755)
        result.files = sorted(os.listdir(tmp))
        _swap(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            rmtree(tmp)
        raise
    return result


def _swap(new: Path, dest: Path) -> None:
    """Put the complete folder `new` in `dest`'s place: the old one is renamed aside, the new
    one renamed in, the old one removed. A reader sees the old channel or the new one (or, for
    the instant between the two renames, none), never a mix."""
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}.tmp"
        os.rename(dest, old)
    try:
        os.rename(new, dest)
    except BaseException:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        rmtree(old)


def _remove_stale(dest: Path) -> None:
    """Remove the temporary folders a killed publish of `dest` left beside it
    (`.DIR.publish-PID.tmp`, `.DIR.old-PID.tmp` whose PID is gone)."""
    for p in dest.parent.glob(f".{dest.name}.*-*.tmp"):
        kind, _, pid = p.name.removeprefix(f".{dest.name}.").removesuffix(".tmp").rpartition("-")
        if kind in ("publish", "old") and pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                rmtree(p)
