"""An OCI distribution (v2) registry client: the only code that talks to registries.

Use `client_for(ref_text)`; nothing outside the cache code needs the modules inside.
"""

from __future__ import annotations

import os

from . import oci
from .auth import Credentials, load_credentials
from .client import RegistryClient, RetryPolicy
from .errors import (
    BlobUnknown,
    DigestMismatch,
    NotFound,
    RegistryAuthError,
    RegistryError,
    RegistryProtocolError,
    RegistryUnavailable,
)
from .reference import Reference, parse_reference

__all__ = ["BlobUnknown", "Credentials", "DigestMismatch", "NotFound", "Reference", "RegistryAuthError",
           "RegistryClient", "RegistryError", "RegistryProtocolError", "RegistryUnavailable",
           "RetryPolicy", "client_for", "load_credentials", "oci", "parse_reference"]


def client_for(ref: str | Reference, *, auth_file: str | os.PathLike | None = None,
               ca_file: str | None = None, insecure: bool = False, **kw) -> RegistryClient:
    """A client for the repository `ref` names (`oci://HOST[:PORT]/REPO` or `HOST/REPO`)."""
    if isinstance(ref, str):
        ref = parse_reference(ref)
    return RegistryClient(ref, auth_file=auth_file, ca_file=ca_file, insecure=insecure, **kw)
