"""Sigstore "simple signing" signatures of images, stored as containers/image and cosign store
them: in the image's repository, under the tag `sha256-<hex>.sig`, an OCI image manifest whose
layers are signatures. Each layer's blob is the payload (which names the repository and the
image manifest's digest), its media type `application/vnd.dev.cosign.simplesigning.v1+json`,
its annotation `dev.cosignproject.cosign/signature` the base64 ECDSA P-256/SHA-256 signature
of the payload's bytes. `skopeo copy` under a `sigstoreSigned` policy (with
`use-sigstore-attachments: true` in registries.d) and `cosign verify --key` read it.
"""

from __future__ import annotations

import base64
import hashlib
import json

import msgspec

from ..errors import UserError
from ..registry import NotFound, oci
from .keys import PublicKey, SigningKey

SIGNATURE_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


def signature_tag(digest: str) -> str:
    """`sha256-<hex>.sig`: where the signatures of image `digest` live."""
    algo, _, hexd = digest.partition(":")
    return f"{algo}-{hexd}.sig"


def payload(identity: str, digest: str) -> bytes:
    """The simple-signing payload for image `digest` in repository `identity` (REGISTRY/REPO,
    no tag: what `signedIdentity: matchRepository` compares), as cosign writes it."""
    doc = {"critical": {"identity": {"docker-reference": identity},
                        "image": {"docker-manifest-digest": digest},
                        "type": PAYLOAD_TYPE},
           "optional": None}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


class Signature(msgspec.Struct, frozen=True):
    payload: bytes
    signature: str  # base64 DER, as in the annotation

    def verify(self, key: PublicKey) -> bool:
        try:
            sig = base64.b64decode(self.signature, validate=True)
        except ValueError:
            return False
        return key.verify(sig, self.payload)


def sign(key: SigningKey, identity: str, digest: str) -> Signature:
    body = payload(identity, digest)
    return Signature(payload=body, signature=base64.b64encode(key.sign(body)).decode())


def _blob_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def attachment(signatures: list[Signature]) -> tuple[bytes, bytes]:
    """(config bytes, manifest bytes) of the signature manifest holding `signatures`. The config
    lists the payloads as diff_ids, as containers/image writes it."""
    config = json.dumps({"architecture": "", "config": {}, "os": "",
                         "rootfs": {"diff_ids": [_blob_digest(s.payload) for s in signatures],
                                    "type": "layers"}},
                        separators=(",", ":"), sort_keys=True).encode()
    manifest = msgspec.json.encode(oci.Manifest(
        config=oci.Descriptor(media_type=CONFIG_TYPE, digest=_blob_digest(config), size=len(config)),
        layers=[oci.Descriptor(media_type=SIGNATURE_TYPE, digest=_blob_digest(s.payload), size=len(s.payload),
                               annotations={SIGNATURE_ANNOTATION: s.signature}) for s in signatures],
    ))
    return config, manifest


def existing(client, digest: str) -> list[Signature]:
    """The signatures the registry already holds for image `digest` (any key's), [] if none."""
    try:
        _, _, data = client.get_manifest(signature_tag(digest), accept=(oci.MANIFEST,))
    except NotFound:
        return []
    try:
        manifest = msgspec.json.decode(data, type=oci.Manifest)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UserError(f"registry {client.ref.registry}: {signature_tag(digest)} is not an OCI "
                        "manifest; refusing to replace it") from None
    out = []
    for layer in manifest.layers:
        if layer.media_type != SIGNATURE_TYPE or not layer.annotations:
            continue
        sig = layer.annotations.get(SIGNATURE_ANNOTATION)
        if sig is None:
            continue
        out.append(Signature(payload=client.fetch_blob(layer.digest), signature=sig))
    return out


def attach(client, key: SigningKey, identity: str, digest: str) -> str:
    """Sign image `digest` and store the signature beside the ones already there (a signature of
    the same payload by the same key is not added twice). Returns the signature manifest's
    digest. The image must be in the registry (by digest); nothing is tagged but the `.sig`."""
    mine = sign(key, identity, digest)
    have = existing(client, digest)
    public = key.public()
    if any(s.payload == mine.payload and s.verify(public) for s in have):
        sigs = have
    else:
        sigs = [*have, mine]
    config, manifest = attachment(sigs)
    client.push_blobs([config, *[s.payload for s in sigs]])
    return client.put_manifest(signature_tag(digest), manifest, oci.MANIFEST)


def verify_image(client, key: PublicKey, identity: str, digest: str) -> bool:
    """Does the registry hold a signature of image `digest` in repository `identity` by `key`?
    (What skopeo's sigstoreSigned/matchRepository checks, for `lxclayer check REF`.)"""
    for s in existing(client, digest):
        if not s.verify(key):
            continue
        try:
            doc = json.loads(s.payload)
            crit = doc["critical"]
            if (crit["type"] == PAYLOAD_TYPE and crit["image"]["docker-manifest-digest"] == digest
                    and _repository(crit["identity"]["docker-reference"]) == identity):
                return True
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return False


def _repository(reference: str) -> str:
    """REGISTRY/REPO of a docker reference, without its tag or digest."""
    head, slash, last = reference.split("@")[0].rpartition("/")
    return head + slash + last.split(":")[0]
