"""Digests: xxh3-128 over a canonical msgspec encoding, and content hashes of files.

Every digest lxclayer computes is the hex of an xxh3-128 hash. Structured data is hashed over
its msgpack encoding with map keys sorted, so that the digest depends on the data only, never
on the order in which a dict was filled.
"""

from __future__ import annotations

from typing import Any

import msgspec
import xxhash

_encoder = msgspec.msgpack.Encoder(order="sorted")

CHUNK = 1 << 20


def canonical(obj: Any) -> bytes:
    """The canonical bytes of `obj` (structs, dicts, lists, strings, numbers)."""
    return _encoder.encode(obj)


def digest(obj: Any) -> str:
    """xxh3-128 of the canonical encoding of `obj`, as 32 hex digits."""
    return xxhash.xxh3_128_hexdigest(canonical(obj))


def digest_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def normalise_text(data: bytes) -> bytes:
    """Text with CRLF line endings made LF; anything holding a NUL byte is binary and kept.

    Checkouts on some systems turn LF into CRLF; a template must not change because of that."""
    if b"\r\n" in data and b"\0" not in data:
        return data.replace(b"\r\n", b"\n")
    return data


def seal(payload: bytes, context: bytes = b"") -> bytes:
    """`payload` prefixed with the xxh3-128 of `context` and `payload`: for files lxclayer
    trusts on a later run without another source of truth (caches, records). `context` binds
    the payload to the name it is kept under, so a valid file moved to another name is refused."""
    return seal_tag(payload, context) + payload


def seal_tag(payload: bytes | bytearray | memoryview, context: bytes = b"") -> bytes:
    """The 16 bytes `seal` puts before `payload` (for writers that write the parts apart)."""
    h = xxhash.xxh3_128(context)
    h.update(payload)
    return h.digest()


def unseal(data: bytes, context: bytes = b"") -> bytes | None:
    """The payload of `seal`'s output, or None if it was altered (or is not sealed)."""
    if len(data) < 16 or seal_tag(memoryview(data)[16:], context) != data[:16]:
        return None
    return data[16:]
