"""The lockfile's data: every fact that pins a template, as typed structs."""

from typing import Annotated

import msgspec

LOCK_VERSION = 1
EMPTY_DIR = "dir"  # the value of an empty folder in a layer's `sources`
Count = Annotated[int, msgspec.Meta(ge=0)]  # sizes, releases, times: a lock never holds a negative one


class Artifact(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """One resolved thing a layer installs: a .deb, a wheel, a tarball, a tool."""

    name: str
    version: str = ""
    arch: str = ""
    sha256: str
    source: str = ""  # where it came from: a URL or an archive pool path
    size: Count = 0


class LockedLayer(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    kind: str
    builder: str  # "<kind>/<version>" of the builder that made it
    settings: str  # digest of the layer's normalised settings
    input: str  # input digest: the store address
    output: str  # output digest: the digest of the layer's manifest
    parents: bool = False  # whether the input includes the output digests of the layers below
    # Sources of the layer folder: path -> "<xxh3-128>" or "<xxh3-128> x" (executable) for a
    # file, "-> <target>" for a symlink, "dir" for an empty folder.
    sources: dict[str, str] = {}
    # Extra resolved inputs a builder records (e.g. owner names resolved to ids).
    resolved: dict[str, str] = {}
    # Resolved artifacts by kind of artifact ("packages", "wheels", "tools", "tarballs"),
    # each name -> artifact.
    artifacts: dict[str, dict[str, Artifact]] = {}
    # When the layer's pins were resolved (UTC, "2026-12-06T11:20:31Z"); "" in locks written
    # before it was recorded. Not part of any digest: it only says where an artifact may be
    # found once its mirror has moved on (`{timestamp}` of [artifacts] fallbacks).
    resolved_at: str = ""


class LockedArchive(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    file: str
    sha256: str
    size: Count
    # An image format's content address: the OCI image manifest's digest, which a registry
    # pull, `skopeo inspect` and PVE's storage show ("" for plain archives).
    image: str = ""


class LockedTemplate(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    name: str
    version: str
    release: Count
    arch: str
    source_date_epoch: Count
    definition: str  # digest of the template definition (name, version, layers, checks...)
    # Per output format ("tar.gz", "tar.zst"): the archive's file name, sha256 and size.
    archives: dict[str, LockedArchive] = {}
    # Per output format: the compressor that made the bytes ("zlib 1.2.13 level 6 chunked/1").
    compressor: dict[str, str] = {}


class Lockfile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    lock_version: int
    template: LockedTemplate
    layers: dict[str, LockedLayer]  # in stack order, bottom first
