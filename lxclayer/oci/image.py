"""The documents of an OCI image (image spec 1.1) that lxclayer writes and reads: the config and
its parts, the media types, the digest of a document. Shared by the writer (`outputs/oci.py`)
and the reader (`oci/layout.py`); msgspec Structs only, cheap to import."""

from __future__ import annotations

import hashlib

import msgspec

CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256_digest(data: bytes) -> str:
    """`sha256:<hex>` of `data`: a document's digest."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- OCI documents (image spec 1.1) -------------------------------------------------------------

class RootFS(msgspec.Struct):
    diff_ids: list[str]
    type: str = "layers"


class ContainerConfig(msgspec.Struct, omit_defaults=True):
    Labels: dict[str, str] = {}
    StopSignal: str = ""


class History(msgspec.Struct, omit_defaults=True):
    created: str
    created_by: str
    empty_layer: bool = False


class ImageConfig(msgspec.Struct, omit_defaults=True):
    created: str
    architecture: str
    os: str
    config: ContainerConfig
    rootfs: RootFS
    history: list[History] = []
