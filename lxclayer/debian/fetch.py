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
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import BuildError, UserError
from ..lock.model import Artifact
from ..progress import events
from ..store import Store

SNAPSHOT_HINT = ("if the mirror no longer serves it, set LXCLAYER_DEB_MIRRORS to a snapshot mirror "
                 "(see docs/builders.md, 'Snapshot mirrors')")
WORKERS = 6
TIMEOUT = 60
RETRIES = 3  # tries of one URL on a transient failure (reset, time-out, 5xx); a 404 is final
RETRY_PAUSE = 2.0  # seconds before the second try, doubled for each further one


def extra_deb_mirrors() -> list[str]:
    return [m.rstrip("/") for m in os.environ.get("LXCLAYER_DEB_MIRRORS", "").split() if m]


class NotFound(Exception):
    pass


def _download(url: str, dest: Path, on_bytes: Callable[[int], None] | None = None) -> None:
    import urllib.error  # imported here: start-up stays light
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": "lxclayer"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r, open(dest, "wb") as f:  # noqa: S310
            while block := r.read(1 << 16):
                f.write(block)
                if on_bytes is not None:
                    on_bytes(len(block))
    except urllib.error.HTTPError as e:
        dest.unlink(missing_ok=True)
        if e.code in (403, 404, 410):
            raise NotFound(f"{url}: HTTP {e.code}") from None
        raise OSError(f"{url}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        dest.unlink(missing_ok=True)
        raise OSError(f"{url}: {getattr(e, 'reason', e)}") from None


def _download_retrying(url: str, dest: Path, on_bytes: Callable[[int], None] | None = None) -> None:
    """`_download`, tried again after a transient failure; NotFound is final at once."""
    for attempt in range(RETRIES):
        try:
            _download(url, dest, on_bytes)
            return
        except NotFound:
            raise
        except OSError:
            if attempt == RETRIES - 1:
                raise
            time.sleep(RETRY_PAUSE * 2**attempt)


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
        part = tmp / f"{a.sha256}.part"
        errors: list[str] = []
        notfound = 0
        got = 0

        def counted(n: int) -> None:
            nonlocal got
            got += n
            meter.add(n)

        for url in urls:
            meter.add(-got)  # a try that broke off: its bytes come again
            got = 0
            try:
                _download_retrying(url, part, counted)
            except NotFound as e:
                notfound += 1
                errors.append(str(e))
                continue
            except OSError as e:
                errors.insert(0, str(e))  # a transient failure says more than another mirror's 404
                continue
            try:
                stored = store.put_artifact_file(part, a.sha256, name=shown)
                meter.file_done()
                return a.sha256, stored
            except UserError as e:
                raise BuildError(f"{e.reason} (downloaded from {url})", file=file, key=key) from None
        if notfound == len(urls):
            raise BuildError(f"{kind} {shown} is not served by {', '.join(_hosts(urls))}; {SNAPSHOT_HINT}",
                             file=file, key=key)
        raise BuildError(f"cannot download {kind} {shown}: {errors[0] if errors else 'no URL'}",
                         file=file, key=key)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(events.bound(one), m) for m in missing]
        first_error: BaseException | None = None
        for f in futures:
            try:
                sha, path = f.result()
                have[sha] = path
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the others finish
                first_error = first_error or e
        if first_error is not None:
            raise first_error
    meter.finish()
    return have


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
