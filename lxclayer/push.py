"""`lxclayer push`: the template's OCI image and its SBOM into a registry.

The image is the locked one: push builds nothing the lock does not name (a `--locked` build of
the `oci` format, a no-op when `dist/` is up to date), then uploads what the registry lacks
(every blob is HEADed first, several at a time) and tags the manifest. The SBOM goes with it as
an OCI 1.1 artifact whose `subject` is the image, so `referrers` (or, on a registry without
that API such as distribution 2.8, the fallback tag `sha256-<hex>`) finds it from the image.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import msgspec

from .build import Events, Mode, build
from .definitions import Project
from .errors import UserError
from .fsio import atomic_write
from .lock import toml as locktoml
from .oci.layout import Layout, read_layout
from .outputs.sbom import sbom_filename, spdx_document
from .progress import events as progress_events
from .progress import sink_of
from .registry import client_for, oci, parse_reference
from .store import Store

SBOM_TYPE = "application/spdx+json"


@dataclass
class PushResult:
    reference: str  # where it went, tag included (never credentials)
    digest: str  # the image manifest's digest: what `skopeo copy`/PVE pulls by
    blobs: int  # blobs the image has (config and layers)
    sent: int  # of which the registry lacked and were uploaded
    sbom: str  # the SBOM artifact manifest's digest
    signature: str = ""  # the sigstore signature manifest's digest (tag sha256-<hex>.sig), if signed
    provenance: str = ""  # the provenance artifact manifest's digest (a DSSE envelope when signed)


def push(project: Project, store: Store, ref_text: str, *, auth_file: str | None = None,
         ca_file: str | None = None, insecure: bool = False, events: Events | None = None,
         sign_key: str | None = None, passphrase_file: str | None = None) -> PushResult:
    """Push the locked template's OCI image to `ref_text` (`HOST[:PORT]/REPO[:TAG]`; the tag
    defaults to `<version>-<release>`), with its SBOM attached.

    With `sign_key` (an ECDSA P-256 PKCS#8 PEM file, see :mod:`.trust.keys`) the image is signed
    (sigstore simple signing, tag `sha256-<hex>.sig`). Nothing is tagged until everything else is
    in place: blobs, the manifest by digest, the signature, the attachments, and the tag last, so
    a failure on the way leaves no unsigned image under the tag."""
    key = None
    if sign_key is not None:
        from .trust import keys

        key = keys.load_private(sign_key, passphrase_file, warn=(events or Events()).warn)
    lock = locktoml.read(project.lock_file)
    if lock is None:
        raise UserError(f"{project.lock_file}: no lock; run `lxclayer build` first (push sends what the lock pins)")
    ref = parse_reference(ref_text, what="push reference")
    if ref.digest:
        raise UserError(f"push reference {ref_text!r}: name a tag, not a digest (the digest is the image's own)")
    tag = ref.tag or f"{project.template.version}-{project.template.release}"
    res = build(project, store, mode=Mode.LOCKED, formats=["oci"], write_lock=False, events=events)
    layout = read_layout(res.archives[0].path)
    sbom = spdx_document(lock)  # the lock alone: the same bytes as dist/'s SBOM
    with progress_events.routed(sink_of(events or Events())), \
            client_for(ref, auth_file=auth_file, ca_file=ca_file, insecure=insecure) as client:
        client.ping()
        # HEAD each blob once; only the missing layers are copied out of the layout and sent
        wanted = [layout.manifest.config.digest, *layout.blobs]
        missing = [d for d in wanted if not client.blob_exists(d)]
        with store.staging("push") as tmp:
            sources = [layout.config_bytes if d == layout.manifest.config.digest else _extract_layer(layout, d, tmp)
                       for d in missing]
            client.push_blobs(sources)
        digest = "sha256:" + hashlib.sha256(layout.manifest_bytes).hexdigest()
        image = client.put_manifest(digest, layout.manifest_bytes, oci.MANIFEST)  # untagged yet
        signature = ""
        if key is not None:
            from .trust import sigstore

            signature = sigstore.attach(client, key, f"{ref.registry}/{ref.repository}", image)
        sbom_digest = _push_sbom(client, sbom, sbom_filename(lock), image, len(layout.manifest_bytes))
        prov_digest = _push_provenance(client, res.provenance, key, image, len(layout.manifest_bytes))
        client.put_manifest(tag, layout.manifest_bytes, oci.MANIFEST)  # last: the tag
    return PushResult(reference=f"{ref.registry}/{ref.repository}:{tag}", digest=image,
                      blobs=len(wanted), sent=len(missing), sbom=sbom_digest, signature=signature,
                      provenance=prov_digest)


def _extract_layer(layout: Layout, digest: str, tmp: Path) -> Path:
    """Layer blob `digest` of the layout as a file, checked against its digest."""
    path = tmp / digest.removeprefix("sha256:")
    h = hashlib.sha256()
    with open(layout.path, "rb") as f, open(path, "wb") as w:
        for data in layout.blob(f, digest).chunks():
            h.update(data)
            w.write(data)
    if "sha256:" + h.hexdigest() != digest:
        raise UserError(f"{layout.path}: layer blob {digest} does not match its digest")
    return path


def _push_sbom(client, sbom: bytes, filename: str, image: str, image_size: int) -> str:
    """The SBOM as an OCI 1.1 artifact: the empty config, one layer (the SPDX JSON), `subject`
    the image. Uploaded by digest; the client keeps the fallback tag for registries without
    the referrers API."""
    return _push_artifact(client, sbom, SBOM_TYPE, filename, image, image_size)


def _push_artifact(client, data: bytes, media_type: str, filename: str, image: str, image_size: int,
                   annotations: dict[str, str] | None = None) -> str:
    """`data` as an OCI 1.1 artifact of type `media_type` whose subject is the image."""
    blob = "sha256:" + hashlib.sha256(data).hexdigest()
    client.push_blobs([b"{}", data])
    notes = {"org.opencontainers.image.title": filename, **(annotations or {})}
    manifest = msgspec.json.encode(oci.Manifest(
        artifact_type=media_type,
        config=oci.Descriptor(media_type=oci.EMPTY, digest=oci.EMPTY_DIGEST, size=2),
        layers=[oci.Descriptor(media_type=media_type, digest=blob, size=len(data), annotations=notes)],
        subject=oci.Descriptor(media_type=oci.MANIFEST, digest=image, size=image_size),
        annotations=notes,
    ))
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    return client.put_manifest(digest, manifest, oci.MANIFEST)


def _push_provenance(client, statement_path: Path, key, image: str, image_size: int) -> str:
    """The build's SLSA provenance (dist/'s statement) as an artifact of the image: with a key,
    a DSSE envelope signed with it (also written to dist/ as `<stem>.intoto.dsse.json`), else
    the statement as it is."""
    from .outputs.provenance import PREDICATE_TYPE
    from .trust import dsse

    statement = statement_path.read_bytes()
    notes = {"in-toto.io/predicate-type": PREDICATE_TYPE}
    if key is None:
        return _push_artifact(client, statement, dsse.INTOTO_TYPE, statement_path.name, image, image_size, notes)
    envelope = dsse.sign(key, statement)
    signed = statement_path.with_name(envelope_filename(statement_path.name))
    atomic_write(signed, envelope)
    return _push_artifact(client, envelope, dsse.ENVELOPE_TYPE, signed.name, image, image_size, notes)


def envelope_filename(statement_name: str) -> str:
    """`X.intoto.json` -> `X.intoto.dsse.json`: the signed provenance beside the statement."""
    return statement_name.removesuffix(".json") + ".dsse.json"
