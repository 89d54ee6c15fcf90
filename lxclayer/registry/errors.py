"""Errors of the registry client. Each is a UserError: the CLI prints it as one line (exit 2).

No message ever holds a credential: they name the registry, the repository and the digest only.
"""

from __future__ import annotations

from ..errors import UserError


class RegistryError(UserError):
    """Base of every error the registry client raises."""


class ReferenceError_(RegistryError):
    """A registry reference (oci://HOST/REPO:TAG) is malformed."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached or kept failing (refused, reset, time-out, 5xx, 429)."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials, or asked for some and none were found."""


class RegistryProtocolError(RegistryError):
    """The registry answered something we refuse: bad JSON, wrong media type, huge body."""


class DigestMismatch(RegistryError):
    """Bytes from the registry do not have the digest they were asked for (or claimed)."""


class NotFound(RegistryError):
    """The blob, manifest or repository does not exist in the registry."""


class BlobUnknown(RegistryProtocolError):
    """A manifest was refused because the registry does not (yet) see a blob it names: another
    client's concurrent push of the same blob may not be visible yet. Push the blobs again."""
