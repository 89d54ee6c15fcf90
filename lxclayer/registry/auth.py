"""Credentials from where container tools keep them, and the WWW-Authenticate challenge.

Looked up in order: an explicit auth file, the file named by REGISTRY_AUTH_FILE, podman's
$XDG_RUNTIME_DIR/containers/auth.json, then ~/.docker/config.json. Each holds
`{"auths": {"HOST[:PORT]": {"auth": base64("user:password")}}}`. A Credentials object never
shows its secret: not in repr, str, or any error message.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

import msgspec

from .errors import RegistryAuthError


class Credentials:
    __slots__ = ("username", "_secret")

    def __init__(self, username: str, secret: str):
        self.username = username
        self._secret = secret

    def basic_header(self) -> str:
        raw = f"{self.username}:{self._secret}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, secret=<hidden>)"

    __str__ = __repr__

    def __reduce__(self):  # never pickled into a file or a process boundary by accident
        raise TypeError("Credentials are not picklable")


class _AuthEntry(msgspec.Struct):
    auth: str | None = None
    username: str | None = None
    password: str | None = None
    identitytoken: str | None = None


class _AuthFile(msgspec.Struct):
    auths: dict[str, _AuthEntry] = {}


def auth_files(explicit: str | os.PathLike | None = None) -> list[Path]:
    files = []
    if explicit:
        files.append(Path(explicit))
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    files.append(Path(os.path.expanduser("~/.docker/config.json")))
    return files


def load_credentials(registry: str, explicit: str | os.PathLike | None = None) -> Credentials | None:
    """The credentials for HOST[:PORT] `registry`, or None. An explicit file must exist."""
    if explicit and not Path(explicit).is_file():
        raise RegistryAuthError("auth file not found", file=str(explicit))
    for path in auth_files(explicit):
        if not path.is_file():
            continue
        try:
            doc = msgspec.json.decode(path.read_bytes(), type=_AuthFile)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            # msgspec's message names the path in the document, never the values.
            raise RegistryAuthError(f"not a valid auth file ({_safe(e)})", file=str(path)) from None
        except OSError as e:
            raise RegistryAuthError(f"cannot read auth file: {e.strerror}", file=str(path)) from None
        for key in (registry, f"https://{registry}", f"http://{registry}",
                    f"https://{registry}/v2/", f"https://{registry}/v1/"):
            entry = doc.auths.get(key)
            if entry is not None:
                return _credentials(entry, path, key)
    return None


def _credentials(entry: _AuthEntry, path: Path, key: str) -> Credentials:
    if entry.auth:
        try:
            user, sep, secret = base64.b64decode(entry.auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise RegistryAuthError("auth is not base64 of user:password", file=str(path),
                                    key=f"auths.{key}.auth")
        return Credentials(user, secret)
    if entry.username and entry.password:
        return Credentials(entry.username, entry.password)
    raise RegistryAuthError("entry has no auth (credential helpers are not supported)",
                            file=str(path), key=f"auths.{key}")


def _safe(e: Exception) -> str:
    msg = str(e)
    return msg.split(" - ", 1)[-1] if " - " in msg else msg.split("`", 1)[0].strip()


_PARAM_RE = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` -> ("bearer", {realm:..., ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM_RE.finditer(rest)}
    return scheme.lower(), params


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_realm(realm: str, registry: str) -> tuple[str, str]:
    """The (scheme, HOST[:PORT]) of a bearer challenge's realm, which must be an http(s) URL with
    a host; anything else (`file:///etc/passwd`, `::::`) is refused in one line. The realm itself
    is never shown: it comes from the server and may carry anything."""
    import urllib.parse

    try:
        u = urllib.parse.urlsplit(realm)
        host, _port = u.hostname, u.port  # .port raises ValueError for a bad port
    except ValueError:
        host = None
        u = None
    if u is None or u.scheme not in ("http", "https") or not host or u.username or u.password:
        raise RegistryAuthError(f"registry {registry}: its token realm is not an http(s) URL with a "
                                "host; refused")
    return u.scheme, u.netloc


def may_send_credentials(realm_scheme: str, realm_netloc: str, registry: str, *,
                         registry_scheme: str) -> bool:
    """Whether our credentials for `registry` may go to the token realm it named, as Docker and
    the OCI clients decide: to any HTTPS realm (Docker Hub's is auth.docker.io, another host);
    over plain HTTP only to a loopback host, or to the registry's own host when the registry
    itself is spoken to over plain HTTP (--cache-insecure: the user chose it). A redirect from
    the realm to another host never carries them (see RegistryClient._once)."""
    if realm_scheme == "https":
        return True
    if realm_scheme != "http":
        return False
    host = realm_netloc.rpartition("@")[2]
    bare = host[1:host.index("]")] if host.startswith("[") else host.rpartition(":")[0] or host
    if _is_loopback(bare):
        return True
    return registry_scheme == "http" and host == registry
