"""`kind = "apt"`: its settings and their validation, in definitions' terms (see lxclayer.kinds)."""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path, PurePosixPath

import msgspec

from .. import hermetic
from ..debian.apt import (
    PKG_NAME_RE,
)
from ..errors import DefinitionError
from ..sources import read_source
from .base import BuilderSpec, Layer, LayerSpec

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
KIND = "apt"
SPEC = BuilderSpec(version=1, reads_below=True, pins=True)
SUITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_/-]*$")
COMPONENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
FPR_RE = re.compile(r"^[0-9A-F]{40}$|^[0-9A-F]{64}$")


class Source(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    uri: str
    suite: str
    components: list[str] = msgspec.field(default_factory=lambda: ["main"])
    key: str  # the signing key, a file beside layer.toml (ASCII-armoured or binary)
    key_sha256: str | None = None
    key_fingerprint: str | None = None


class Settings(LayerSpec, tag=KIND):
    packages: list[str] = []
    sources: list[Source] = []
    recommends: bool = False  # install Recommends too (apt's default; off as in mmdebstrap)


# --- validation ---------------------------------------------------------------------------------


def key_path(layer: Layer, src: Source, shown_file: str, key: str) -> Path:
    p = PurePosixPath(src.key)
    if p.is_absolute() or ".." in p.parts or not src.key:
        raise DefinitionError("must be a file inside the layer folder", file=shown_file, key=key)
    path = layer.dir / src.key
    if not path.is_file():
        raise DefinitionError(f"file {src.key!r} not found beside layer.toml", file=shown_file, key=key)
    return path


def gpg_fingerprints(data: bytes) -> list[str]:
    """Fingerprints of the primary keys in an OpenPGP key file (needs gpg)."""
    with tempfile.TemporaryDirectory(prefix="lxclayer-gpg-") as home:
        try:
            p = hermetic.run(
                ["gpg", "--homedir", home, "--batch", "--no-tty", "--with-colons", "--show-keys", "--fixed-list-mode"],
                input=data, capture_output=True,
            )
        except FileNotFoundError:
            raise DefinitionError("key_fingerprint needs gpg on the host (apt-get install gpg)") from None
    out, primary = [], False
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        f = line.split(":")
        if f[0] in ("pub", "sub"):
            primary = f[0] == "pub"
        elif f[0] == "fpr" and primary and len(f) > 9:
            out.append(f[9].upper())
            primary = False
    return out


def check_key(layer: Layer, i: int, shown_file: str) -> bytes:
    """The key file's bytes, if they are the pinned key; otherwise a DefinitionError."""
    s: Settings = layer.spec  # type: ignore[assignment]
    src = s.sources[i]
    path = key_path(layer, src, shown_file, f"sources[{i}].key")
    data = read_source(path)
    if src.key_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != src.key_sha256:
            raise DefinitionError(
                f"key file {src.key!r} has sha256 {actual}, not the pinned {src.key_sha256}: refusing it",
                file=shown_file, key=f"sources[{i}].key_sha256",
            )
    if src.key_fingerprint is not None:
        want = src.key_fingerprint.replace(" ", "").upper()
        fprs = gpg_fingerprints(data)
        if fprs != [want]:
            found = ", ".join(fprs) or "no OpenPGP key"
            raise DefinitionError(
                f"key file {src.key!r} holds {found}, not (only) the pinned key {want}: refusing it",
                file=shown_file, key=f"sources[{i}].key_fingerprint",
            )
    return data


def validate(layer: Layer, shown_file: str) -> None:
    s: Settings = layer.spec  # type: ignore[assignment]
    for i, p in enumerate(s.packages):
        if "=" in p:
            raise DefinitionError(f"{p!r}: give package names only; versions are pinned by the lockfile",
                                  file=shown_file, key=f"packages[{i}]")
        if not PKG_NAME_RE.match(p):
            raise DefinitionError(f"{p!r} is not a Debian package name", file=shown_file, key=f"packages[{i}]")
    if len(set(s.packages)) != len(s.packages):
        dup = next(p for p in s.packages if s.packages.count(p) > 1)
        raise DefinitionError(f"{dup!r} is listed twice", file=shown_file, key="packages")
    for i, src in enumerate(s.sources):
        k = f"sources[{i}]"
        if not re.match(r"^https?://\S+$", src.uri):
            raise DefinitionError(f"{src.uri!r} is not an http(s):// URL", file=shown_file, key=f"{k}.uri")
        if not SUITE_RE.match(src.suite):
            raise DefinitionError(f"{src.suite!r} is not a suite name", file=shown_file, key=f"{k}.suite")
        if not src.suite.endswith("/"):
            if not src.components:
                raise DefinitionError("at least one component is needed", file=shown_file, key=f"{k}.components")
            for j, c in enumerate(src.components):
                if not COMPONENT_RE.match(c):
                    raise DefinitionError(f"{c!r} is not a component name", file=shown_file,
                                          key=f"{k}.components[{j}]")
        if src.key_sha256 is None and src.key_fingerprint is None:
            raise DefinitionError("pin the key: give key_sha256 or key_fingerprint", file=shown_file, key=f"{k}.key")
        if src.key_sha256 is not None and not SHA256_RE.match(src.key_sha256):
            raise DefinitionError("must be 64 lower-case hex digits", file=shown_file, key=f"{k}.key_sha256")
        if src.key_fingerprint is not None and not FPR_RE.match(src.key_fingerprint.replace(" ", "").upper()):
            raise DefinitionError("must be a 40 (or 64) hex digit OpenPGP fingerprint", file=shown_file,
                                  key=f"{k}.key_fingerprint")
        check_key(layer, i, shown_file)


# --- the layer's own sources --------------------------------------------------------------------
