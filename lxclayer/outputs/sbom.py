"""The template's SBOM: an SPDX 2.3 JSON document made from the lock alone.

Everything in it is a fact the lock pins; nothing is read from the store, the built tree or the
clock, so the same lock gives the same bytes on any machine, before or after a build:

- one package for the template (`CONTAINER`), which the document DESCRIBES;
- one package per Debian package of every layer (`artifacts["packages"]`): purl
  `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-N`, the .deb's sha256, its pool URL and
  its source package (the pool directory it lives in);
- one package per wheel of every venv (`artifacts["wheels"]`) and per tool (`artifacts["tools"]`,
  i.e. uv): purl `pkg:pypi/NAME@VERSION`, the wheel's sha256 and URL;
- the template CONTAINS each of them.

The same file pinned twice (by two layers, or by two venvs) is one package: duplicates are
found by (name, version, arch, sha256) for .debs and by (normalised name, version, sha256) for
wheels. Licenses are NOASSERTION: the lock does not record them.
"""

from __future__ import annotations

import datetime
import re
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from .. import __version__
from ..fsio import write_if_changed
from ..lock.model import Artifact, Lockfile
from ..lock.toml import stack_digest

SPDX_VERSION = "SPDX-2.3"
NOASSERTION = "NOASSERTION"
NAMESPACE_BASE = "https://lxclayer.invalid/spdx/"
DEBIAN_BASE = "https://deb.debian.org/debian/"
DEBIAN_SECURITY_BASE = "https://deb.debian.org/debian-security/"
DEBIAN_SUPPLIER = "Organization: Debian"


# --- the document's shape (only the SPDX 2.3 fields we write) ------------------------------------

class Checksum(msgspec.Struct, frozen=True, rename="camel"):
    algorithm: str
    checksum_value: str


class ExternalRef(msgspec.Struct, frozen=True, rename="camel"):
    reference_category: str
    reference_type: str
    reference_locator: str


class Package(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    spdx_id: str = msgspec.field(name="SPDXID")
    name: str
    version_info: str = ""
    package_file_name: str = ""
    supplier: str = ""
    download_location: str
    # Written always (no default, so omit_defaults keeps them): SPDX 2.3's default for
    # filesAnalyzed is true, which would need a file list; the lock records no licenses.
    files_analyzed: bool
    license_concluded: str
    license_declared: str
    copyright_text: str
    checksums: list[Checksum] = []
    source_info: str = ""
    external_refs: list[ExternalRef] = []
    primary_package_purpose: str = ""


class Relationship(msgspec.Struct, frozen=True, rename="camel"):
    spdx_element_id: str
    relationship_type: str
    related_spdx_element: str


class CreationInfo(msgspec.Struct, frozen=True, rename="camel"):
    created: str
    creators: list[str]


class Document(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    spdx_version: str = SPDX_VERSION
    data_license: str = "CC0-1.0"
    spdx_id: str = msgspec.field(default="SPDXRef-DOCUMENT", name="SPDXID")
    name: str
    document_namespace: str
    creation_info: CreationInfo
    packages: list[Package]
    relationships: list[Relationship]


# --- naming ---------------------------------------------------------------------------------------

_NOT_ID = re.compile(r"[^A-Za-z0-9.-]+")


def _id_part(s: str) -> str:
    """`s` as part of an SPDXID (letters, digits, `.` and `-` only)."""
    return _NOT_ID.sub("-", s).strip("-") or "x"


def _pct(s: str) -> str:
    """A purl component: everything but the unreserved characters (A-Z a-z 0-9 - . _ ~)
    percent-encoded, as the purl spec asks (so `1:2.38+b1` is `1%3A2.38%2Bb1`)."""
    return urllib.parse.quote(s, safe="")


def pypi_name(name: str) -> str:
    """A Python project name normalised as PEP 503 says (and the pypi purl type requires)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def deb_purl(name: str, version: str, arch: str, distro: str | None) -> str:
    qualifiers = [("arch", arch)] if arch else []
    if distro:
        qualifiers.append(("distro", distro))
    purl = f"pkg:deb/debian/{_pct(name)}@{_pct(version)}"
    if qualifiers:  # sorted by key, as the purl spec's canonical form has them
        purl += "?" + "&".join(f"{k}={_pct(v)}" for k, v in sorted(qualifiers))
    return purl


def pypi_purl(name: str, version: str) -> str:
    return f"pkg:pypi/{_pct(pypi_name(name))}@{_pct(version)}"


def debian_release(lock: Lockfile) -> str | None:
    """`debian-N` from the major version of the base layer's `base-files` (12.4+deb12u15 ->
    debian-12), or None when the base layer pins no such package."""
    if not lock.layers:
        return None
    base = next(iter(lock.layers.values()))
    bf = base.artifacts.get("packages", {}).get("base-files")
    m = re.match(r"(?:\d+:)?(\d+)", bf.version) if bf else None
    return f"debian-{m.group(1)}" if m else None


def pool_url(path: str) -> str:
    """The URL of a .deb from its archive pool path: security updates (pool/updates/...) are on
    the security archive, the rest on the main one. Anything else is not a place we can name."""
    if path.startswith("pool/updates/"):
        return DEBIAN_SECURITY_BASE + path
    if path.startswith("pool/"):
        return DEBIAN_BASE + path
    return NOASSERTION


def source_package(path: str) -> str | None:
    """The source package a .deb was built from: the folder it lives in, in the pool
    (pool/main/u/util-linux/bsdutils_... -> util-linux)."""
    parts = path.split("/")
    return parts[-2] if path.startswith("pool/") and len(parts) >= 4 else None


def sbom_filename(lock: Lockfile) -> str:
    t = lock.template
    return f"{t.name}_{t.version}-{t.release}_{t.arch}.spdx.json"


# --- the packages -------------------------------------------------------------------------------

def _package(**fields: Any) -> Package:
    """A package of the lock: no file list, and licenses the lock cannot tell."""
    return Package(files_analyzed=False, license_concluded=NOASSERTION,
                   license_declared=NOASSERTION, copyright_text=NOASSERTION, **fields)


def locked_artifacts(lock: Lockfile, kind: str) -> Iterable[Artifact]:
    for layer in lock.layers.values():
        yield from layer.artifacts.get(kind, {}).values()


def _unique(found: Iterable[Artifact], key: Callable[[Artifact], tuple[str, ...]]) -> list[Artifact]:
    """One artifact per key, in key order. Of several with one key (the same file pinned twice),
    the same one whatever order the lock lists them in: the least by name, source and size."""
    chosen: dict[tuple[str, ...], Artifact] = {}
    for a in found:
        k = key(a)
        if k not in chosen or (a.name, a.source, a.size) < (chosen[k].name, chosen[k].source, chosen[k].size):
            chosen[k] = a
    return [chosen[k] for k in sorted(chosen)]


def _file_name(source: str) -> str:
    return urllib.parse.unquote(source.rstrip("/").rsplit("/", 1)[-1]) if source else ""


def _debs(lock: Lockfile) -> list[tuple[str, Package]]:
    distro = debian_release(lock)
    out = []
    for a in _unique(locked_artifacts(lock, "packages"), lambda a: (a.name, a.version, a.arch, a.sha256)):
        src = source_package(a.source)
        out.append((f"SPDXRef-deb-{_id_part(a.name)}-{_id_part(a.version)}-{_id_part(a.arch)}", _package(
            spdx_id="",
            name=a.name,
            version_info=a.version,
            package_file_name=_file_name(a.source),
            supplier=DEBIAN_SUPPLIER,
            download_location=pool_url(a.source),
            checksums=[Checksum("SHA256", a.sha256)],
            source_info=f"built from the Debian source package {src}" if src else "",
            external_refs=[ExternalRef("PACKAGE-MANAGER", "purl",
                                       deb_purl(a.name, a.version, a.arch, distro))],
        )))
    return out


def _wheels(lock: Lockfile) -> list[tuple[str, Package]]:
    found = [*locked_artifacts(lock, "wheels"), *locked_artifacts(lock, "tools")]
    out = []
    for a in _unique(found, lambda a: (pypi_name(a.name), a.version, a.sha256)):
        out.append((f"SPDXRef-pypi-{_id_part(pypi_name(a.name))}-{_id_part(a.version)}", _package(
            spdx_id="",
            name=a.name,
            version_info=a.version,
            package_file_name=_file_name(a.source),
            download_location=a.source if "://" in a.source else NOASSERTION,
            checksums=[Checksum("SHA256", a.sha256)],
            external_refs=[ExternalRef("PACKAGE-MANAGER", "purl", pypi_purl(a.name, a.version))],
        )))
    return out


def _with_unique_ids(named: list[tuple[str, Package]]) -> list[Package]:
    """Each package with its SPDXID; the few whose readable ids collide (the same name, version
    and arch pinned with different files, or names that differ only in characters an SPDXID
    cannot hold) get their sha256 appended."""
    seen: dict[str, int] = {}
    for i, _ in named:
        seen[i] = seen.get(i, 0) + 1
    out = []
    for i, p in named:
        if seen[i] > 1:
            i = f"{i}-{p.checksums[0].checksum_value}"
        out.append(msgspec.structs.replace(p, spdx_id=i))
    if len({p.spdx_id for p in out}) != len(out):
        raise ValueError("two packages of the lock have the same SPDX id and sha256")
    return out


def created_at(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def document(lock: Lockfile) -> Document:
    """The SPDX document for the template `lock` pins (see the module's docstring)."""
    t = lock.template
    template = _package(
        spdx_id=f"SPDXRef-template-{_id_part(t.name)}",
        name=t.name,
        version_info=f"{t.version}-{t.release}",
        download_location=NOASSERTION,  # made locally by lxclayer, not downloaded
        primary_package_purpose="CONTAINER",
    )
    packages = _with_unique_ids(_debs(lock) + _wheels(lock))
    # The template CONTAINS each package, rather than each package being CONTAINED_BY it: SPDX
    # 2.3 reads `A CONTAINS B` as "B is inside A" (an archive and its files), the form tools such
    # as syft emit for an image and its packages, and it reads from the element the document
    # describes outwards, so a consumer starts at DESCRIBES and follows one relationship type.
    relationships = [Relationship("SPDXRef-DOCUMENT", "DESCRIBES", template.spdx_id)]
    relationships += [Relationship(template.spdx_id, "CONTAINS", p.spdx_id) for p in packages]
    # The lock's stack digest, the one the OCI image carries as its `dev.lxclayer.lock` label.
    digest = stack_digest(lock).removeprefix("sha256:")
    return Document(
        name=f"{t.name}-{t.version}-{t.release}",
        document_namespace=f"{NAMESPACE_BASE}{_pct(t.name)}-{_pct(t.version)}-{t.release}-{digest}",
        creation_info=CreationInfo(created=created_at(t.source_date_epoch),
                                   creators=[f"Tool: lxclayer-{__version__}"]),
        packages=[template, *packages],
        relationships=relationships,
    )


def spdx_document(lock: Lockfile) -> bytes:
    """SPDX 2.3 JSON for the template the lock pins; same lock -> same bytes."""
    raw = msgspec.json.encode(document(lock), order="sorted")
    return msgspec.json.format(raw, indent=2) + b"\n"


__all__ = ["sbom_filename", "spdx_document"]


def write_sbom(lock: Lockfile, out_dir: Path) -> Path:
    """`<out_dir>/<template>.spdx.json` from the lock alone; rewritten only when it differs."""
    path = out_dir / sbom_filename(lock)
    write_if_changed(path, spdx_document(lock))
    return path
