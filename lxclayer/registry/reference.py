"""Registry references: `oci://HOST[:PORT]/REPO[:TAG|@DIGEST]` (cache) and `HOST[:PORT]/REPO[:TAG]`."""

from __future__ import annotations

import ipaddress
import re

import msgspec

from .errors import ReferenceError_

# The distribution spec's grammar (distribution/reference), restricted to what we accept.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$")


class Reference(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int | None = None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def registry(self) -> str:
        """HOST[:PORT], as registries and auth files name it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse_reference(text: str, *, scheme: bool | None = None, what: str = "registry reference") -> Reference:
    """Parse a reference. `scheme=True` requires `oci://`, False forbids it, None accepts both."""
    def bad(reason: str) -> ReferenceError_:
        return ReferenceError_(f"{what} {text!r}: {reason}")

    rest = text.strip()
    if rest.startswith("oci://"):
        if scheme is False:
            raise bad("give HOST[:PORT]/REPOSITORY[:TAG] without the oci:// scheme")
        rest = rest[len("oci://"):]
    elif "://" in rest:
        raise bad("only the oci:// scheme is supported")
    elif scheme is True:
        raise bad("expected oci://HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]")
    host_part, slash, path = rest.partition("/")
    if not slash or not path:
        raise bad("expected HOST[:PORT]/REPOSITORY, with a registry host and a repository")
    if "@" in host_part:
        raise bad("credentials do not belong in a reference; use an auth file")
    host, port = _split_host(host_part, bad)
    digest = tag = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if not _DIGEST_RE.match(digest):
            raise bad(f"digest {digest!r} is not sha256:<64 lowercase hex>")
    if ":" in path.rsplit("/", 1)[-1]:
        path, _, tag = path.rpartition(":")
        if not _TAG_RE.match(tag):
            raise bad(f"tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], not starting with . or -")
    if not _REPO_RE.match(path) or len(path) > 255:
        raise bad(f"repository {path!r} must be lowercase path components of [a-z0-9._-]")
    return Reference(host=host, port=port, repository=path, tag=tag, digest=digest)


def _split_host(part: str, bad) -> tuple[str, int | None]:
    if part.startswith("["):
        host, sep, tail = part[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"host {part!r} is not an IPv6 address") from None
        port_text = tail[1:] if tail.startswith(":") else (None if not tail else "")
    else:
        host, sep, port_text = part.partition(":")
        port_text = port_text if sep else None
        if not _HOST_RE.match(host):
            raise bad(f"host {host!r} is not a host name or address")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise bad(f"port {port_text!r} must be a number from 1 to 65535")
        port = int(port_text)
    return host, port
