"""The one way lxclayer downloads: pinned artifacts (.debs, wheels, uv, import tarballs) and the
package index pages it resolves wheels from.

Policy (docs/builders.md, "Downloads"):

- each network operation (connect, every read) has :data:`TIMEOUT` seconds; one download has
  :data:`DEADLINE` seconds of wall-clock time in all, its retries included;
- a transient fault (HTTP 5xx, 408, 429, a connection reset, a time-out, a body cut short) is
  tried again, after 1, 2, 4 s (:data:`RETRIES` tries in all);
- a place that says the file is gone (HTTP 404, 410) is not asked again: the next URL is tried
  at once. A host that cannot be reached (name not resolved, connection refused, no route) or
  that answers something that is not HTTP gets one quick second try, then the next URL;
- the body streams into a temporary file beside `dest` while its sha256 is computed; the size
  is checked against Content-Length (a short read is transient), against the expected size
  before anything is read and after; the file is renamed to `dest` only when size and sha256
  are right, so `dest` is never half written;
- ``http_proxy``, ``https_proxy``, ``no_proxy`` (and the upper-case forms) of the environment
  are used (urllib's ProxyHandler);
- every failure is one :class:`DownloadError` whose message names each URL tried and why (no
  traceback, whatever the server or a proxy answers); user and password in a URL are never
  shown (:func:`redact`).

:func:`fetch` takes the URLs to try in order, so a caller can add fallbacks (another mirror, a
snapshot archive) by adding URLs; :attr:`DownloadError.tried` and :attr:`DownloadError.kind`
say what happened at each.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

TIMEOUT = 20.0  # seconds for a connection to be made, and for each read
DEADLINE = 900.0  # seconds of wall-clock time for one download, retries included
RETRIES = 4  # tries of one URL on transient faults
BACKOFF = 1.0  # seconds before the second try, doubled for each further one
QUICK_RETRY = 0.5  # seconds before the one second try of a host that cannot be reached
USER_AGENT = "lxclayer"
BLOCK = 1 << 20

# What went wrong at one place: decides what is done next.
GONE = "gone"  # 404, 410: the place does not have it; next URL at once
UNREACHABLE = "unreachable"  # no such host, refused, no route, not HTTP: one quick retry
TRANSIENT = "transient"  # 5xx, reset, time-out, short read: retried with back-off
CORRUPT = "corrupt"  # wrong size or sha256: the place serves other bytes; next URL
REFUSED = "refused"  # other HTTP errors (401, 403, 400...): next URL

_counter = itertools.count()


class DownloadError(Exception):
    """Every place tried and why; `kind` is "gone" if every place said so (404/410), "corrupt"
    if any served other bytes, else "unreachable"."""

    def __init__(self, tried: list[tuple[str, str]], kinds: list[str]):
        self.tried = tried  # (redacted URL, reason), in the order tried
        self.kinds = kinds
        if kinds and all(k == GONE for k in kinds):
            self.kind = GONE
        elif CORRUPT in kinds:
            self.kind = CORRUPT
        else:
            self.kind = UNREACHABLE
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        if not self.tried:
            return "no URL to download from"
        return "; ".join(f"{u}: {why}" for u, why in self.tried)


class _Fault(Exception):
    def __init__(self, kind: str, why: str):
        self.kind, self.why = kind, why


def redact(url: str) -> str:
    """`url` without user name and password."""
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    if p.username is None and p.password is None:
        return url
    host = f"[{p.hostname}]" if ":" in (p.hostname or "") else (p.hostname or "")
    if p.port:
        host += f":{p.port}"
    return urllib.parse.urlunsplit((p.scheme, f"***@{host}", p.path, p.query, p.fragment))


def _opener():
    import urllib.request  # imported here: start-up stays light

    # ProxyHandler() reads http_proxy/https_proxy/no_proxy (either case) from os.environ.
    return urllib.request.build_opener(urllib.request.ProxyHandler())


def _classify(e: BaseException) -> _Fault:
    import http.client
    import socket
    import ssl
    import urllib.error

    if isinstance(e, _Fault):
        return e
    if isinstance(e, urllib.error.HTTPError):
        code = e.code
        if code in (404, 410):
            return _Fault(GONE, f"HTTP {code}")
        if code >= 500 or code in (408, 429):
            return _Fault(TRANSIENT, f"HTTP {code}")
        return _Fault(REFUSED, f"HTTP {code}" + (f" {e.reason}" if e.reason else ""))
    if isinstance(e, urllib.error.URLError):
        inner = e.reason
        if isinstance(inner, BaseException):
            return _classify(inner)
        return _Fault(UNREACHABLE, str(inner))
    if isinstance(e, http.client.BadStatusLine):
        line = str(e).strip().replace("\n", " ")[:120]
        return _Fault(UNREACHABLE, f"the answer is not HTTP ({line!r}): a proxy or server fault"
                      if line else "the connection was closed without an answer")
    if isinstance(e, http.client.IncompleteRead):
        return _Fault(TRANSIENT, f"the body ended after {len(e.partial)} bytes")
    if isinstance(e, http.client.HTTPException):
        return _Fault(TRANSIENT, f"the connection broke off ({type(e).__name__})")
    if isinstance(e, socket.gaierror):
        return _Fault(UNREACHABLE, f"cannot resolve the host name ({e.strerror or e})")
    if isinstance(e, (TimeoutError, socket.timeout)):
        return _Fault(TRANSIENT, f"no answer within {TIMEOUT:.0f} s")
    if isinstance(e, ssl.SSLCertVerificationError):
        return _Fault(REFUSED, f"TLS: {e.verify_message or e.reason or e}")
    if isinstance(e, ssl.SSLError):
        return _Fault(TRANSIENT, f"TLS: {e.reason or e}")
    if isinstance(e, (ConnectionRefusedError,)):
        return _Fault(UNREACHABLE, "connection refused")
    if isinstance(e, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return _Fault(TRANSIENT, "the connection was reset")
    if isinstance(e, OSError):
        import errno

        if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN):
            return _Fault(UNREACHABLE, e.strerror or str(e))
        return _Fault(TRANSIENT, e.strerror or str(e))
    if isinstance(e, ValueError):  # a URL urllib cannot use
        return _Fault(REFUSED, f"not a URL lxclayer can download ({e})")
    return _Fault(TRANSIENT, f"{type(e).__name__}: {e}")


def _get(url: str, headers: Mapping[str, str], timeout: float):
    import urllib.request

    auth = None
    p = urllib.parse.urlsplit(url)
    if p.username is not None:  # user:password@host: sent as HTTP basic auth, never shown
        import base64

        cred = f"{urllib.parse.unquote(p.username)}:{urllib.parse.unquote(p.password or '')}"
        auth = "Basic " + base64.b64encode(cred.encode()).decode()
        host = f"[{p.hostname}]" if ":" in (p.hostname or "") else (p.hostname or "")
        url = urllib.parse.urlunsplit((p.scheme, f"{host}:{p.port}" if p.port else host, p.path, p.query, p.fragment))
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    if auth is not None:
        req.add_unredirected_header("Authorization", auth)  # not sent on to where a redirect points
    return _opener().open(req, timeout=timeout)


def _once(url: str, part: Path, *, sha256: str | None, size: int | None, headers: Mapping[str, str],
          until: float, on_bytes: Callable[[int], None] | None = None) -> None:
    """One try: stream `url` into `part`, checking length, size and sha256. `on_bytes` hears of
    every block, and of the bytes of a failed try taken back (a negative count)."""
    h = hashlib.sha256()
    got = 0
    counted = on_bytes or (lambda n: None)
    try:
        with _get(url, headers, min(TIMEOUT, max(1.0, until - time.monotonic()))) as r, open(part, "wb") as f:
            length = r.headers.get("Content-Length")
            want = int(length) if length is not None and length.strip().isdigit() else None
            if size and want is not None and want != size:
                raise _Fault(CORRUPT, f"the server says {want} bytes, the pin says {size}")
            while block := r.read(BLOCK):
                h.update(block)
                f.write(block)
                got += len(block)
                counted(len(block))
                if size and got > size:
                    raise _Fault(CORRUPT, f"more than the pinned {size} bytes")
                if time.monotonic() > until:
                    raise _Fault(TRANSIENT, f"not done within {DEADLINE:.0f} s")
    except BaseException as e:
        part.unlink(missing_ok=True)
        counted(-got)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise _classify(e) from None
    if (want is not None and got != want) or (size and got != size) or (
            sha256 is not None and h.hexdigest() != sha256):
        counted(-got)
    if want is not None and got != want:
        part.unlink(missing_ok=True)
        raise _Fault(TRANSIENT, f"the body ended after {got} of {want} bytes")
    if size and got != size:
        part.unlink(missing_ok=True)
        raise _Fault(CORRUPT, f"{got} bytes, the pin says {size}")
    if sha256 is not None and h.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise _Fault(CORRUPT, f"sha256 is {h.hexdigest()}, expected {sha256}")


def _tries(url: str, attempt: Callable[[], None], until: float, sleep: Callable[[float], None]) -> None:
    """`attempt()` with the retry policy; raises the last _Fault."""
    quick_done = False
    for n in range(RETRIES):
        try:
            attempt()
            return
        except _Fault as f:
            if f.kind in (GONE, CORRUPT, REFUSED) or n == RETRIES - 1:
                raise
            if f.kind == UNREACHABLE:
                if quick_done:
                    raise
                quick_done = True
                pause = QUICK_RETRY
            else:
                pause = BACKOFF * 2 ** n
            if time.monotonic() + pause >= until:
                raise
            sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


def fetch(urls: Sequence[str], dest: Path, *, sha256: str | None, size: int | None = None,
          headers: Mapping[str, str] | None = None, log: Callable[[str], None] = lambda m: None,
          sleep: Callable[[float], None] = time.sleep, on_bytes: Callable[[int], None] | None = None) -> str:
    """Download the first of `urls` that serves the right bytes into `dest` (replaced
    atomically); returns the URL that served it. DownloadError names every place tried.
    `on_bytes`: progress, as in :func:`_once`."""
    tried: list[tuple[str, str]] = []
    kinds: list[str] = []
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}-{next(_counter)}.part")
    for url in urls:
        until = time.monotonic() + DEADLINE
        try:
            _tries(url, lambda u=url, t=until: _once(u, part, sha256=sha256, size=size, headers=headers or {}, until=t,
                                                            on_bytes=on_bytes),
                   until, sleep)
        except _Fault as f:
            tried.append((redact(url), f.why))
            kinds.append(f.kind)
            if len(urls) > 1:
                log(f"{redact(url)}: {f.why}")
            continue
        os.replace(part, dest)
        return url
    raise DownloadError(tried, kinds)


def read(urls: Sequence[str], *, headers: Mapping[str, str] | None = None, limit: int = 64 << 20,
         sleep: Callable[[float], None] = time.sleep) -> tuple[bytes, str]:
    """The body of the first of `urls` that answers (an index page: nothing to check it
    against), with the URL it came from after redirects. Same policy as :func:`fetch`."""
    tried: list[tuple[str, str]] = []
    kinds: list[str] = []
    for url in urls:
        until = time.monotonic() + DEADLINE
        box: list[tuple[bytes, str]] = []

        def attempt(u: str = url, box: list = box) -> None:
            try:
                with _get(u, headers or {}, TIMEOUT) as r:
                    data = r.read(limit + 1)
                    length = r.headers.get("Content-Length")
                    final = r.geturl()
            except BaseException as e:
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                raise _classify(e) from None
            if len(data) > limit:
                raise _Fault(REFUSED, f"larger than {limit} bytes")
            if length is not None and length.strip().isdigit() and len(data) != int(length):
                raise _Fault(TRANSIENT, f"the body ended after {len(data)} of {length} bytes")
            box.append((data, final))

        try:
            _tries(url, attempt, until, sleep)
        except _Fault as f:
            tried.append((redact(url), f.why))
            kinds.append(f.kind)
            continue
        return box[0]
    raise DownloadError(tried, kinds)
