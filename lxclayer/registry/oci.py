"""The OCI documents the client reads and writes (image spec 1.1), as msgspec Structs."""

from __future__ import annotations

import msgspec

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
MANIFEST_TYPES = (MANIFEST, INDEX)


class Descriptor(msgspec.Struct, omit_defaults=True, rename="camel"):
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None
    artifact_type: str | None = None


class Manifest(msgspec.Struct, omit_defaults=True, rename="camel"):
    config: Descriptor
    layers: list[Descriptor]
    schema_version: int | None = None   # always 2 once built (see __post_init__)
    media_type: str | None = None
    artifact_type: str | None = None
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None

    def __post_init__(self):
        # Set here, not as defaults, so that omit_defaults still writes them: registries need both.
        self.schema_version = self.schema_version or 2
        self.media_type = self.media_type or MANIFEST


class Index(msgspec.Struct, omit_defaults=True, rename="camel"):
    manifests: list[Descriptor]
    schema_version: int | None = None   # always 2 once built
    media_type: str | None = None
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None

    def __post_init__(self):
        self.schema_version = self.schema_version or 2
        self.media_type = self.media_type or INDEX


class MediaTypeOnly(msgspec.Struct):
    mediaType: str | None = None
    subject: Descriptor | None = None
    artifactType: str | None = None
    config: Descriptor | None = None
    annotations: dict[str, str] | None = None
