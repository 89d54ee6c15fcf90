"""An OCI distribution (v2) registry client: the only code that talks to registries.

Use `client_for(ref_text)`; nothing outside the cache code needs the modules inside.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import oci
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

if TYPE_CHECKING:
    from .auth import Credentials, load_credentials
    from .client import RegistryClient, RetryPolicy

# The client (http.client, ssl) and the auth code load when first used: an OCI image is written
# with the documents in `oci` on every build, but only the cache and `push` talk to a registry.
_LAZY = {"RegistryClient": "client", "RetryPolicy": "client", "Credentials": "auth", "load_credentials": "auth"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

__all__ = ["BlobUnknown", "Credentials", "DigestMismatch", "NotFound", "Reference", "RegistryAuthError",
           "RegistryClient", "RegistryError", "RegistryProtocolError", "RegistryUnavailable",
           "RetryPolicy", "client_for", "load_credentials", "oci", "parse_reference"]


def client_for(ref: str | Reference, *, auth_file: str | os.PathLike | None = None,
               ca_file: str | None = None, insecure: bool = False, **kw) -> RegistryClient:
    """A client for the repository `ref` names (`oci://HOST[:PORT]/REPO` or `HOST/REPO`)."""
    from .client import RegistryClient

    if isinstance(ref, str):
        ref = parse_reference(ref)
    return RegistryClient(ref, auth_file=auth_file, ca_file=ca_file, insecure=insecure, **kw)
