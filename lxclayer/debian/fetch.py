"""Pinned artifacts (.debs, wheels) in the store: fetched once, checked by sha256 on every use.

A pinned artifact is addressed by its sha256, so where its bytes come from does not matter:
a .deb is tried at each archive base it may live under (the layer's mirrors, then those in
``LXCLAYER_DEB_MIRRORS``, e.g. a snapshot.debian.org URL), a wheel at its recorded URL. With
``offline`` nothing is downloaded: a missing artifact is an error that names it.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..artifacts import OCI, Gone, fetch_oci
from ..artifacts import shown as show_place
from ..errors import BuildError, UserError
from ..lock.model import Artifact
from ..store import Store

SNAPSHOT_HINT = ("list where else it may be in [artifacts] fallbacks of lxclayer.toml, e.g. "
                 "snapshot.debian.org (docs/cache.md, 'Pins that outlive the mirror')")
WORKERS = 6
TIMEOUT = 60
RETRIES = 3  # tries of one URL on a transient failure (reset, time-out, 5xx); a 404 is final
RETRY_PAUSE = 2.0  # seconds before the second try, doubled for each further one


def extra_deb_mirrors() -> list[str]:
    return [m.rstrip("/") for m in os.environ.get("LXCLAYER_DEB_MIRRORS", "").split() if m]


class NotFound(Exception):
    pass


def _download(url: str, dest: Path) -> None:
    import urllib.error  # imported here: start-up stays light
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": "lxclayer"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r, open(dest, "wb") as f:  # noqa: S310
            while block := r.read(1 << 20):
                f.write(block)
    except urllib.error.HTTPError as e:
        dest.unlink(missing_ok=True)
        if e.code in (403, 404, 410):
            raise NotFound(f"{url}: HTTP {e.code}") from None
        raise OSError(f"{url}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        dest.unlink(missing_ok=True)
        raise OSError(f"{url}: {getattr(e, 'reason', e)}") from None


def _download_retrying(url: str, dest: Path) -> None:
    """`_download`, tried again after a transient failure; NotFound is final at once."""
    for attempt in range(RETRIES):
        try:
            _download(url, dest)
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

    def one(item: tuple[Artifact, str, list[str]]) -> tuple[str, Path]:
        a, shown, urls = item
        part = tmp / f"{a.sha256}.part"
        errors: list[str] = []
        notfound = 0
        for url in urls:
            try:
                if url.startswith(OCI):
                    fetch_oci(url, part, size=a.size or None)
                else:
                    _download_retrying(url, part)
            except (NotFound, Gone) as e:
                notfound += 1
                errors.append(str(e))
                continue
            except OSError as e:
                errors.append(str(e))
                continue
            try:
                return a.sha256, store.put_artifact_file(part, a.sha256, name=shown)
            except UserError as e:
                raise BuildError(f"{e.reason} (downloaded from {url})", file=file, key=key) from None
        # One line: the package, its version and every place tried, each with its answer.
        hint = f"; {SNAPSHOT_HINT}" if notfound == len(urls) else ""
        raise BuildError(f"no place has {kind} {shown} (sha256 {a.sha256[:12]}…); tried "
                         + ", ".join(show_place(e) for e in errors or ["no URL"]) + hint, file=file, key=key)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(one, m) for m in missing]
        first_error: BaseException | None = None
        for f in futures:
            try:
                sha, path = f.result()
                have[sha] = path
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the others finish
                first_error = first_error or e
        if first_error is not None:
            raise first_error
    return have


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
