"""`lxclayer check --key / --pgp-cert`: is this file (or image) ours?

What is checkable where:

- an image in a registry (`check HOST/REPO:TAG --key PUB`): its sigstore signature (tag
  `sha256-<hex>.sig`), exactly what a node's `sigstoreSigned` policy checks, and the signed
  provenance attached to it (a DSSE envelope whose subject is the image);
- a file offline (`check FILE --key PUB`): the signed provenance beside it,
  `<template>.intoto.dsse.json` (push --sign-key writes it to dist/, publish copies it to the
  channel), must verify with the key and name FILE: its sha256, or for an OCI `.tar` its image
  manifest digest (a `.tar` that came through skopeo has other outer bytes but the same image).
  A `.intoto.dsse.json` given itself is checked as an envelope;
- a file with OpenPGP (`check FILE --pgp-cert CERT`): `FILE.asc` when there is one, else the
  channel's `SHA512SUMS.asc` beside it (sqv), and FILE's sha512 as SHA512SUMS lists it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..fsio import sha256_file
from . import dsse, pgp
from .keys import PublicKey

ARCHIVE_SUFFIXES = (".tar.gz", ".tar.zst", ".tar")


@dataclass
class Verdict:
    ok: bool
    what: str  # one line: what was checked and how it came out


def _stem(name: str) -> str:
    for suffix in (".intoto.dsse.json", *ARCHIVE_SUFFIXES):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def envelope_beside(path: Path) -> Path:
    return path.with_name(_stem(path.name) + ".intoto.dsse.json")


def check_file_key(path: Path, key: PublicKey) -> Verdict:
    """The signed provenance beside `path` verifies with `key` and names `path`."""
    if path.name.endswith(".intoto.dsse.json"):
        body = dsse.verify(_read(path), key)
        return Verdict(body is not None, "DSSE envelope " + ("signed by the key" if body is not None
                                                             else "NOT signed by the key"))
    env_path = envelope_beside(path)
    if not env_path.is_file():
        raise UserError(f"no signed provenance {env_path.name} beside it (push --sign-key writes one to "
                        "dist/, publish copies it); an image in a registry: check HOST/REPO:TAG --key",
                        file=str(path))
    body = dsse.verify(_read(env_path), key)
    if body is None:
        return Verdict(False, f"{env_path.name} is NOT signed by the key")
    try:
        statement = json.loads(body)
        names = {(s.get("name"), s["digest"]["sha256"]) for s in statement["subject"]}
    except (ValueError, KeyError, TypeError, AttributeError):
        return Verdict(False, f"{env_path.name}: signed, but not an in-toto statement")
    digests = {d for _, d in names}
    sha = sha256_file(path)
    if sha in digests:
        return Verdict(True, f"sha256 {sha} is a subject of {env_path.name}, signed by the key")
    if path.name.endswith(".tar"):
        from ..oci.layout import read_layout

        image = read_layout(path).manifest_digest
        if image.removeprefix("sha256:") in digests:
            return Verdict(True, f"image {image} is a subject of {env_path.name}, signed by the key")
    return Verdict(False, f"{env_path.name} is signed by the key but does not name this file (sha256 {sha})")


def check_file_pgp(path: Path, cert: Path) -> Verdict:
    if not cert.is_file():
        raise UserError("cannot read the OpenPGP certificate", file=str(cert))
    own = path.with_name(path.name + ".asc")
    if own.is_file():
        good, said = pgp.verify_detached(cert, own, path)
        return Verdict(good, f"{own.name}: " + ("good signature by " + said if good else "BAD: " + said))
    sums, sums_sig = path.with_name("SHA512SUMS"), path.with_name("SHA512SUMS.asc")
    if not (sums.is_file() and sums_sig.is_file()):
        raise UserError(f"no signature: neither {own.name} nor SHA512SUMS and SHA512SUMS.asc beside it",
                        file=str(path))
    good, said = pgp.verify_detached(cert, sums_sig, sums)
    if not good:
        return Verdict(False, f"SHA512SUMS.asc: BAD: {said}")
    listed = {}
    for line in _read(sums).decode(errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        listed[name.lstrip("*")] = digest
    if path.name not in listed:
        return Verdict(False, f"SHA512SUMS (good signature by {said}) does not list {path.name}")
    h = hashlib.sha512()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    if h.hexdigest() != listed[path.name]:
        return Verdict(False, f"sha512 differs from SHA512SUMS (good signature by {said})")
    return Verdict(True, f"sha512 as in SHA512SUMS, good signature by {said}")


def check_image(ref_text: str, key: PublicKey, *, auth_file: str | None = None,
                insecure: bool = False) -> list[Verdict]:
    """The image a registry has under HOST/REPO:TAG (or @digest): its sigstore signature by
    `key`, and a provenance envelope attached to it that the key signed and that names it."""
    from ..registry import client_for, oci, parse_reference
    from . import sigstore

    ref = parse_reference(ref_text, what="image reference")
    if not (ref.tag or ref.digest):
        raise UserError(f"image reference {ref_text!r}: name a tag or a digest")
    identity = f"{ref.registry}/{ref.repository}"
    out = []
    with client_for(ref, auth_file=auth_file, insecure=insecure) as client:
        _, digest, _ = client.get_manifest(ref.digest or ref.tag, accept=(oci.MANIFEST,))
        ok = sigstore.verify_image(client, key, identity, digest)
        out.append(Verdict(ok, f"image {digest}: sigstore signature by the key "
                               + ("for " + identity if ok else "NOT found")))
        envs = client.referrers(digest, dsse.ENVELOPE_TYPE)
        good = False
        for d in envs:
            _, _, data = client.get_manifest(d.digest, accept=(oci.MANIFEST,))
            layers = json.loads(data).get("layers") or []
            if not layers:
                continue
            body = dsse.verify(client.fetch_blob(layers[0]["digest"], limit=64 << 20), key)
            try:
                subjects = {s["digest"]["sha256"] for s in json.loads(body)["subject"]} if body else set()
            except (ValueError, KeyError, TypeError):
                subjects = set()
            if digest.removeprefix("sha256:") in subjects:
                good = True
                break
        out.append(Verdict(good, "signed provenance (DSSE) naming the image "
                                 + ("attached" if good else "NOT attached")))
    return out


def check_signatures(target: Path, key_file: str | None, pgp_cert: Path | None) -> list[Verdict]:
    """What `check --key/--pgp-cert` checks, one verdict each: with a key, the signed provenance
    beside the file, or, when `target` is no file, the image it names in a registry; with an
    OpenPGP certificate, the file's `.asc` or the channel's SHA512SUMS.asc beside it."""
    from . import keys

    verdicts = []
    if key_file:
        key = keys.load_public(key_file)
        if target.exists():
            verdicts.append(check_file_key(target, key))
        else:  # not a file: an image in a registry
            verdicts += check_image(str(target), key)
    if pgp_cert is not None:
        verdicts.append(check_file_pgp(target, pgp_cert))
    return verdicts


def _read(path: Path) -> bytes:
    try:
        if os.path.getsize(path) > 64 << 20:
            raise UserError("too large for a signature file", file=str(path))
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read: {e.strerror or e}", file=str(path)) from None
