"""Pins that outlive the mirror: where else a pinned .deb or wheel may be fetched from.

A pinned artifact is addressed by its sha256, so any server may deliver it: the lock's sha256
is checked whoever serves the bytes. The project lists, in `lxclayer.toml`, the places to try
when an artifact's own source answers 404/410 or cannot be reached at all::

    [artifacts]
    fallbacks = [
      "https://snapshot.debian.org/archive/debian/{timestamp}/{path}",
      "http://mirror.example.com/by-sha256/{sha256}",
      "oci://registry.example.com/team/artifacts",
    ]

A fallback is a URL template with any of

- ``{sha256}``: the artifact's sha256 (hex),
- ``{name}``: its file name (``libssl3t64_3.5.9-1~deb13u1_amd64.deb``),
- ``{path}``: its path at its source (a Debian pool path, or the path of a wheel's URL),
- ``{url}``: the URL it was first tried at,
- ``{timestamp}``: when the layer pinning it was resolved, as snapshot.debian.org writes it
  (``20261206T112031Z``; from the lock's `resolved_at`),

or ``oci://HOST[:PORT]/REPO``: a registry holding the artifacts as blobs named by their sha256
(what ``lxclayer cache push --artifacts`` uploads; docs/cache.md). What a fallback may be is
checked when the settings load (:func:`lxclayer.settings.check_fallback`).
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from .lock.model import Artifact
from .settings import OCI, load, placeholders

TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"  # snapshot.debian.org's
RESOLVED_AT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # the lock's `resolved_at`


def now_resolved_at() -> str:
    """The lock's `resolved_at` for a resolution made now (UTC, to the second)."""
    return datetime.now(UTC).strftime(RESOLVED_AT_FORMAT)


def snapshot_timestamp(resolved_at: str) -> str:
    """`2026-12-06T11:20:31Z` -> `20261206T112031Z`; "" when there is none or it is unreadable."""
    try:
        return datetime.strptime(resolved_at, RESOLVED_AT_FORMAT).strftime(TIMESTAMP_FORMAT)
    except ValueError:
        return ""


def fetched(a: Artifact) -> bool:
    """Whether `a` is downloaded (a URL or an archive's pool path), not a file of the project."""
    return "://" in a.source or a.source.startswith("pool/")


def artifact_path(a: Artifact) -> str:
    """The artifact's path at its source: a pool path as it is, a URL's path."""
    if "://" in a.source:
        return urllib.parse.urlsplit(a.source).path.lstrip("/")
    return a.source.lstrip("/")


def artifact_name(a: Artifact) -> str:
    return urllib.parse.unquote(artifact_path(a).rsplit("/", 1)[-1]) or a.name


def render(template: str, a: Artifact, *, url: str, resolved_at: str) -> str | None:
    """The URL of `a` under a fallback template; None when it needs a timestamp the lock lacks."""
    ts = snapshot_timestamp(resolved_at)
    if "timestamp" in placeholders(template) and not ts:
        return None
    quoted = urllib.parse.quote(artifact_path(a), safe="/+~")
    return template.format(sha256=a.sha256, name=urllib.parse.quote(artifact_name(a), safe="+~"),
                           path=quoted, url=url, timestamp=ts)


def oci_place(ref: str, a: Artifact) -> str:
    """The place of `a` in an artifacts registry: `oci://HOST/REPO@sha256:HEX`."""
    return f"{ref.rstrip('/')}@sha256:{a.sha256}"


def candidates(a: Artifact, primary: list[str], fallbacks: list[str], *, resolved_at: str = "") -> list[str]:
    """Where to fetch `a`, in order: its own URLs, then each fallback (rendered; an oci://
    fallback as `oci://HOST/REPO@sha256:HEX`). A fallback that needs a timestamp the lock does
    not have is left out."""
    out = list(dict.fromkeys(primary))
    first = primary[0] if primary else a.source
    for f in fallbacks:
        u = oci_place(f, a) if f.startswith(OCI) else render(f, a, url=first, resolved_at=resolved_at)
        if u and u not in out:
            out.append(u)
    return out


def project_fallbacks(root: Path) -> list[str]:
    """`[artifacts] fallbacks` of the project at `root` (checked when the settings load)."""
    return list(load(root).artifacts.fallbacks)


def shown(url: str) -> str:
    """A place for a message: no user name or password, even if the URL carries them."""
    if url.startswith(OCI):
        return url
    p = urllib.parse.urlsplit(url)
    if p.username or p.password:
        netloc = p.hostname or ""
        if p.port:
            netloc += f":{p.port}"
        p = p._replace(netloc=netloc)
    return urllib.parse.urlunsplit(p)


class Gone(Exception):
    """The place answered that it does not have the artifact (404/410, blob unknown)."""


def fetch_oci(place: str, dest: Path, *, size: int | None = None) -> None:
    """Download `oci://HOST/REPO@sha256:HEX` to `dest` (verified by the registry client).
    Gone if the registry does not have it; OSError if it cannot be reached."""
    from .registry import NotFound, RegistryError, RetryPolicy, client_for

    ref, _, digest = place.rpartition("@")
    try:
        # A fallback: a registry that cannot be reached is given up soon, not after minutes.
        with client_for(ref, retry=RetryPolicy(attempts=2, total=10.0), timeout=20.0) as c:
            c.get_blob(digest, dest, size=size)
    except NotFound:
        raise Gone(f"{place}: not in the registry") from None
    except RegistryError as e:
        if "unknown" in str(e).lower() or "404" in str(e):
            raise Gone(f"{place}: not in the registry") from None
        raise OSError(f"{place}: {e}") from None


# --- the artifacts registry (`lxclayer cache push --artifacts`) ---------------------------------

ARTIFACT_TYPE = "application/vnd.lxclayer.artifacts.v1"
DEB_MEDIA_TYPE = "application/vnd.debian.binary-package"
WHEEL_MEDIA_TYPE = "application/vnd.python.wheel"
PUSHED_GROUPS = ("packages", "wheels")


def pinned(lock) -> dict[str, tuple[Artifact, str]]:
    """sha256 -> (artifact, group) of every pinned .deb and wheel of `lock`."""
    out: dict[str, tuple[Artifact, str]] = {}
    for la in lock.layers.values():
        for group in PUSHED_GROUPS:
            for a in (la.artifacts.get(group) or {}).values():
                out.setdefault(a.sha256, (a, group))
    return dict(sorted(out.items()))


def artifacts_tag(lock) -> str:
    """The tag of a lock's artifacts manifest: `artifacts-<sha256 of the lock's pins>`."""
    import hashlib

    listing = "".join(f"{sha} {a.name} {a.version}\n" for sha, (a, _) in pinned(lock).items())
    return "artifacts-" + hashlib.sha256(listing.encode()).hexdigest()


class PushReport(msgspec.Struct, kw_only=True):
    tag: str
    artifacts: int
    missing: list[str]  # "name version" of pins the store does not hold


def push_artifacts(client, lock, store) -> PushReport:
    """Upload every pinned .deb and wheel of `lock` that the store holds as a blob named by its
    sha256 (the lock's), and an OCI manifest tagged :func:`artifacts_tag` listing them, so that
    a registry's garbage collection keeps them. Blobs the registry has are not sent again."""
    from .registry import oci

    layers: list = []
    missing: list[str] = []
    for sha, (a, group) in pinned(lock).items():
        path = store.artifact(sha, name=a.name)
        if path is None:
            missing.append(f"{a.name} {a.version}".strip())
            continue
        client.put_blob(path, f"sha256:{sha}")
        layers.append(oci.Descriptor(
            media_type=DEB_MEDIA_TYPE if group == "packages" else WHEEL_MEDIA_TYPE,
            digest=f"sha256:{sha}", size=path.stat().st_size,
            annotations={"org.opencontainers.image.title": artifact_name(a)}))
    client.put_blob(b"{}", oci.EMPTY_DIGEST)
    manifest = oci.Manifest(config=oci.Descriptor(media_type=oci.EMPTY, digest=oci.EMPTY_DIGEST, size=2),
                            layers=layers, artifact_type=ARTIFACT_TYPE,
                            annotations={"org.lxclayer.template": lock.template.name})
    tag = artifacts_tag(lock)
    client.put_manifest(tag, msgspec.json.encode(manifest))
    return PushReport(tag=tag, artifacts=len(layers), missing=missing)


def places_for(ctx):
    """For a builder: `places(artifact, own_urls)` -> its own URLs, then the project's
    fallbacks (rendered with the layer's resolution time from the lock)."""
    fallbacks = project_fallbacks(ctx.project.root)
    resolved_at = getattr(ctx, "resolved_at", "")

    def places(a: Artifact, own: list[str]) -> list[str]:
        return candidates(a, own, fallbacks, resolved_at=resolved_at)

    return places
