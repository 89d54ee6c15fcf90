"""DSSE envelopes (github.com/secure-systems-lab/dsse): the signed form of an in-toto statement.

The signature is over PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body,
lengths in ASCII decimal; the envelope carries the body base64-encoded. With an ECDSA key
signing deterministically (RFC 6979), the same statement and key give the same envelope.
"""

from __future__ import annotations

import base64

import msgspec

from .keys import PublicKey, SigningKey

INTOTO_TYPE = "application/vnd.in-toto+json"
ENVELOPE_TYPE = "application/vnd.dsse.envelope.v1+json"


class DsseSignature(msgspec.Struct, frozen=True):
    keyid: str
    sig: str


class Envelope(msgspec.Struct, frozen=True, rename="camel"):
    payload_type: str
    payload: str
    signatures: list[DsseSignature]


def pae(payload_type: str, body: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def sign(key: SigningKey, body: bytes, payload_type: str = INTOTO_TYPE) -> bytes:
    """The envelope (JSON, keys sorted, one line per key as the statement is) for `body`."""
    sig = key.sign(pae(payload_type, body))
    env = Envelope(payload_type=payload_type, payload=base64.b64encode(body).decode(),
                   signatures=[DsseSignature(keyid=key.public().keyid(), sig=base64.b64encode(sig).decode())])
    return msgspec.json.format(msgspec.json.encode(env, order="sorted"), indent=2) + b"\n"


def decode(data: bytes) -> Envelope:
    return msgspec.json.decode(data, type=Envelope)


def verify(data: bytes, key: PublicKey) -> bytes | None:
    """The body of envelope `data` when one of its signatures verifies with `key`, else None."""
    try:
        env = decode(data)
        body = base64.b64decode(env.payload, validate=True)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None
    for s in env.signatures:
        try:
            sig = base64.b64decode(s.sig, validate=True)
        except ValueError:
            continue
        if key.verify(sig, pae(env.payload_type, body)):
            return body
    return None
