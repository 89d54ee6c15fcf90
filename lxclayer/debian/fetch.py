"""Pinned artifacts (.debs, wheels) in the store: fetched once, checked by sha256 on every use.

A pinned artifact is addressed by its sha256, so where its bytes come from does not matter:
a .deb is tried at each archive base it may live under (the layer's mirrors, then those in
``LXCLAYER_DEB_MIRRORS``, e.g. a snapshot.debian.org URL), a wheel at its recorded URL. With
``offline`` nothing is downloaded: a missing artifact is an error that names it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import download
from ..artifacts import OCI, Gone, fetch_oci
from ..errors import BuildError, UserError
from ..lock.model import Artifact
from ..progress import events
from ..store import Store

SNAPSHOT_HINT = ("list where else it may be in [artifacts] fallbacks of lxclayer.toml, e.g. "
                 "snapshot.debian.org (docs/cache.md, 'Pins that outlive the mirror')")
WORKERS = 6
RETRIES = download.RETRIES  # (the policy is lxclayer.download's)


def extra_deb_mirrors() -> list[str]:
    return [m.rstrip("/") for m in os.environ.get("LXCLAYER_DEB_MIRRORS", "").split() if m]


def fetch_all(
    store: Store,
    items: list[tuple[Artifact, str, list[str]]],
    tmp: Path,
    *,
    offline: bool,
    log: Callable[[str], None],
    file: str | None,
    key: str | None,
    kind: str = "package",
) -> dict[str, Path]:
    """Make sure every artifact is in the store; returns sha256 -> stored path.

    `items` holds (artifact, display name, candidate URLs in order)."""
    have: dict[str, Path] = {}
    missing: list[tuple[Artifact, str, list[str]]] = []
    for a, shown, urls in items:
        if a.sha256 in have:
            continue
        p = store.artifact(a.sha256, name=shown)
        if p is not None:
            have[a.sha256] = p
        elif not any(m[0].sha256 == a.sha256 for m in missing):
            missing.append((a, shown, urls))
    if not missing:
        return have
    if offline:
        a, shown, _ = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BuildError(
            f"{kind} {shown} (sha256 {a.sha256}) is not in the store and --offline is set{more}",
            file=file, key=key,
        )
    total = sum(a.size for a, _, _ in missing)
    log(f"downloading {len(missing)} {kind}s ({total / 1e6:.1f} MB)")
    tmp.mkdir(parents=True, exist_ok=True)
    meter = _Meter(f"{kind}s", len(missing), total)

    def one(item: tuple[Artifact, str, list[str]]) -> tuple[str, Path]:
        a, shown, urls = item
        dest = tmp / f"{a.sha256}.download"
        try:
            url = fetch_places(urls, dest, a, log, meter.add)
        except download.DownloadError as e:
            # One line: the package, its version and every place tried, each with its answer.
            hint = f"; {SNAPSHOT_HINT}" if e.kind == download.GONE else ""
            raise BuildError(f"no place has {kind} {shown} (sha256 {a.sha256[:12]}…); tried {e.reason}{hint}",
                             file=file, key=key) from None
        try:
            stored = store.put_artifact_file(dest, a.sha256, name=shown)
            meter.file_done()
            return a.sha256, stored
        except UserError as e:
            raise BuildError(f"{e.reason} (downloaded from {download.redact(url)})", file=file, key=key) from None

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(events.bound(one), m) for m in missing]
        first_error: BaseException | None = None
        for f in futures:
            if f.cancelled():
                continue
            try:
                sha, path = f.result()
                have[sha] = path
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the running ones finish
                first_error = first_error or e
                for other in futures:  # the build fails anyway: start no further download
                    other.cancel()
        if first_error is not None:
            raise first_error
    meter.finish()
    return have


def fetch_places(places: list[str], dest: Path, a: Artifact, log: Callable[[str], None],
                 on_bytes: Callable[[int], None] | None = None) -> str:
    """Download `a` from the first of `places` that has it: URLs through lxclayer.download,
    `oci://HOST/REPO@sha256:…` (an [artifacts] fallback) from that registry. Returns the place;
    DownloadError naming every place tried."""
    tried: list[tuple[str, str]] = []
    kinds: list[str] = []
    i = 0
    while i < len(places):
        if places[i].startswith(OCI):
            try:
                fetch_oci(places[i], dest, size=a.size or None)
                return places[i]
            except Gone as e:
                tried.append((places[i], str(e).removeprefix(places[i] + ": ")))
                kinds.append(download.GONE)
            except OSError as e:
                tried.append((places[i], str(e).removeprefix(places[i] + ": ")))
                kinds.append(download.UNREACHABLE)
            i += 1
            continue
        j = i
        while j < len(places) and not places[j].startswith(OCI):
            j += 1
        try:
            return download.fetch(places[i:j], dest, sha256=a.sha256, size=a.size or None, log=log,
                                  on_bytes=on_bytes)
        except download.DownloadError as e:
            tried += e.tried
            kinds += e.kinds
        i = j
    raise download.DownloadError(tried, kinds)


class _Meter:
    """Bytes and files of a download, as progress events (docs/progress.md), now and then."""

    def __init__(self, what: str, files: int, total: int):
        self.what, self.files, self.total = what, files, total
        self.files_done = 0
        self.rate = events.Rate(total)
        self._lock = threading.Lock()

    def _event(self, done: bool = False) -> events.DownloadProgress:
        return events.DownloadProgress(layer=events.layer(), what=self.what, files_done=self.files_done,
                                       files_total=self.files, bytes_done=max(self.rate.done, 0),
                                       bytes_total=self.total, rate=round(self.rate.rate), done=done)

    def add(self, n: int) -> None:
        if not events.active():
            return
        with self._lock:
            say = self.rate.add(n)
        if say:
            events.emit(self._event())

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def finish(self) -> None:
        if events.active():
            events.emit(self._event(done=True))


def _hosts(urls: list[str]) -> list[str]:
    out = []
    for u in urls:
        p = urllib.parse.urlsplit(u)
        base = f"{p.scheme}://{p.netloc}"
        if base not in out:
            out.append(base)
    return out


def deb_urls(a: Artifact, bases: list[str]) -> list[str]:
    path = urllib.parse.quote(a.source.lstrip("/"), safe="/+~")
    seen: list[str] = []
    for b in [*bases, *extra_deb_mirrors()]:
        u = f"{b.rstrip('/')}/{path}"
        if u not in seen:
            seen.append(u)
    return seen


def link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        import shutil

        shutil.copyfile(src, dest)
