"""A small client for the OCI distribution API v2, over http.client and ssl (no dependency).

Everything pulled is verified: a blob is streamed to a temporary file next to its destination,
hashed, and renamed into place only when its sha256 and size are right; a manifest's bytes are
checked against the digest asked for and against Docker-Content-Digest. Transient faults
(refused, reset, time-out, short read, 5xx, 429) are retried with bounded back-off, then raised
as RegistryUnavailable. Credentials never leave the Authorization header.

Bounds, against a registry that answers with intent (docs/cache.md): every operation (one API
call, or one blob download with its retries) has a wall-clock deadline that covers the body too:
a watchdog shuts the operation's sockets when it passes, so an answer trickled one byte at a time
ends there; it is not retried. A blob is never read past the size its descriptor gives, and an
answer whose Content-Length exceeds it is refused without reading it (and not retried). A client
may also have an end for all its operations (the build's cache budget).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from ..errors import UserError
from ..progress import events
from . import oci
from .auth import Credentials, check_realm, load_credentials, may_send_credentials, parse_challenge
from .errors import (
    BlobUnknown,
    DigestMismatch,
    NotFound,
    RegistryAuthError,
    RegistryError,
    RegistryProtocolError,
    RegistryUnavailable,
)
from .reference import Reference

MAX_MANIFEST = 4 * 1024 * 1024   # the distribution spec's recommended limit
MAX_SMALL_BODY = 1024 * 1024     # token and error answers
CHUNK = 1024 * 1024
_RETRY_STATUS = {429, 500, 502, 503, 504}


class _Transient(Exception):
    """One attempt failed in a way worth retrying; `why` is safe to show."""

    def __init__(self, why: str, retry_after: float | None = None):
        super().__init__(why)
        self.why = why
        self.retry_after = retry_after


class _Operation:
    """The wall-clock deadline of one operation: when it passes, every socket the operation uses
    is shut down, so a read blocked on a trickling server returns at once."""

    def __init__(self, seconds: float, end: float | None):
        now = time.monotonic()
        self.end = now + seconds if end is None else min(now + seconds, end)
        self.by_budget = end is not None and end <= now + seconds
        self.seconds = seconds
        self.expired = False
        self._socks: set = set()
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, self.end - now), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def watch(self, conn) -> None:
        sock = getattr(conn, "sock", None)
        if sock is None:
            return
        with self._lock:
            if self.expired:
                _shut(sock)
            else:
                self._socks.add(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shut(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._socks.clear()


def _shut(sock) -> None:
    try:
        # the plain socket's shutdown, also for a TLS socket (whose own would drop its state
        # under a read blocked in another thread): that read then sees the end of the stream
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class RetryPolicy(msgspec.Struct, frozen=True):
    attempts: int = 4          # tries per operation
    first_delay: float = 0.2   # seconds; doubles each time
    max_delay: float = 2.0
    total: float = 30.0        # an operation gives up after this many seconds of retrying
    deadline: float = 30.0     # wall-clock seconds per operation, bodies and retries included
    per_mib: float = 4.0       # ... plus this many seconds per MiB of a blob's declared size (256 KiB/s)


class Response:
    """Status, lower-cased headers and (unless streamed) the body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes, raw=None, conn=None):
        self.status, self.headers, self.body, self.raw, self._conn = status, headers, body, raw, conn

    def close(self):
        if self._conn is not None:
            self._conn.close()


class RegistryClient:
    """A client for one repository of one registry."""

    def __init__(self, ref: Reference, *, credentials: Credentials | None = None,
                 auth_file: str | os.PathLike | None = None, ca_file: str | None = None,
                 insecure: bool = False, timeout: float = 30.0, retry: RetryPolicy | None = None,
                 workers: int = 4, budget_end: float | None = None):
        self.ref = ref
        self.repository = ref.repository
        self._creds = credentials if credentials is not None else load_credentials(ref.registry, auth_file)
        # Plain HTTP only where nobody else can listen in, or when the user says so explicitly.
        self.scheme = "http" if (insecure or ref.loopback) else "https"
        self._ssl = None
        if self.scheme == "https":
            self._ssl = ssl.create_default_context(cafile=ca_file)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.workers = workers
        self.budget_end = budget_end        # time.monotonic() after which nothing is asked
        self._token: dict[str, str] = {}   # scope -> Authorization header value
        self._lock = threading.Lock()
        self._idle = threading.local()      # per thread: kept-alive connections
        self._ops = threading.local()       # per thread: the operation under way

    def __repr__(self) -> str:
        return f"RegistryClient({self.scheme}://{self.ref.registry}/{self.repository})"

    # ---- transport ----------------------------------------------------------------------
    def _connect(self, host: str, port: int | None, scheme: str) -> tuple[object, bool]:
        """A kept-alive connection of this thread to (scheme, host, port), or a new one;
        and whether it was reused (a reused one may have been closed by the server meanwhile)."""
        conn = getattr(self._idle, "conns", {}).pop((scheme, host, port), None)
        if conn is not None:
            return conn, True
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl), False
        return http.client.HTTPConnection(host, port, timeout=self.timeout), False

    def _keep(self, key: tuple, conn, r) -> None:
        if r.will_close:
            conn.close()
            return
        if not hasattr(self._idle, "conns"):
            self._idle.conns = {}
        old = self._idle.conns.pop(key, None)
        if old is not None:
            old.close()
        self._idle.conns[key] = conn

    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.ref.registry}{path}"

    def _once(self, method: str, url: str, headers: dict[str, str], body, stream: bool,
              limit: int) -> Response:
        """One HTTP exchange, following redirects. Our Authorization goes to the host first
        asked only: a redirect to another host (or to plain HTTP) never carries it."""
        first = urllib.parse.urlsplit(url)
        for _ in range(5):
            u = urllib.parse.urlsplit(url)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise RegistryProtocolError(f"registry {self.ref.registry}: redirected to a URL that "
                                            "is not http(s); refused")
            if u.scheme == "http" and (self.scheme == "https" or first.scheme == "https"):
                raise RegistryProtocolError(f"registry {self.ref.registry} redirected to plain HTTP; refused")
            key = (u.scheme, u.hostname, u.port)
            conn, reused = self._connect(*key[1:], u.scheme)
            target = u.path + (f"?{u.query}" if u.query else "")
            hdrs = dict(headers)
            if u.netloc != first.netloc or u.scheme != first.scheme:
                hdrs.pop("Authorization", None)
            data = body() if callable(body) else body
            try:
                try:
                    self._start(conn)
                    conn.request(method, target, body=data, headers=hdrs)
                    r = conn.getresponse()
                except (ConnectionError, http.client.RemoteDisconnected):
                    if not reused:
                        raise
                    # The server closed our idle kept-alive connection: not a fault, go again.
                    conn.close()
                    if hasattr(data, "close"):
                        data.close()
                    data = body() if callable(body) else body
                    conn, reused = self._connect(*key[1:], u.scheme)[0], False
                    self._start(conn)
                    conn.request(method, target, body=data, headers=hdrs)
                    r = conn.getresponse()
                hs = {k.lower(): v for k, v in r.getheaders()}
                if r.status in (301, 302, 303, 307, 308) and "location" in hs:
                    conn.close()
                    url = urllib.parse.urljoin(url, hs["location"])
                    if r.status == 303:
                        method, body = "GET", None
                    continue
                if stream and r.status == 200:
                    return Response(r.status, hs, b"", raw=r, conn=conn)
                try:
                    # (a HEAD answer must be read too, or the connection cannot be used again)
                    payload = r.read(0) if method == "HEAD" else _read_limited(r, limit, self.ref.registry)
                except (RegistryProtocolError, _Transient):
                    conn.close()
                    raise
                self._keep(key, conn, r)
                return Response(r.status, hs, payload)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise _Transient(_describe(e)) from None
            finally:
                if hasattr(data, "close"):
                    data.close()
        raise RegistryProtocolError(f"registry {self.ref.registry}: too many redirects")

    def _start(self, conn) -> None:
        """Connect `conn` (if it is new) under the current operation's deadline, and let the
        operation's watchdog shut it when the deadline passes."""
        op = getattr(self._ops, "op", None)
        if op is None:
            return
        left = op.remaining()
        if left <= 0 or op.expired:
            raise _Transient("deadline passed")
        if conn.sock is None:
            conn.timeout = min(self.timeout, left)
            conn.connect()
        conn.sock.settimeout(min(self.timeout, left))
        op.watch(conn)

    def operation(self, size: int = 0):
        """A context for one operation: its deadline (the policy's, plus time for `size` bytes),
        shared by nested calls in the same thread."""
        import contextlib

        @contextlib.contextmanager
        def scope():
            if getattr(self._ops, "op", None) is not None:
                yield self._ops.op
                return
            if self.budget_end is not None and time.monotonic() >= self.budget_end:
                raise RegistryUnavailable(f"registry {self.ref.registry}: the cache's time budget "
                                          "for this build is spent")
            op = _Operation(self.retry.deadline + self.retry.per_mib * size / (1 << 20), self.budget_end)
            self._ops.op = op
            try:
                yield op
            finally:
                self._ops.op = None
                op.close()

        return scope()

    def close(self) -> None:
        """Close the connections this thread keeps alive (others close with their threads)."""
        for conn in getattr(self._idle, "conns", {}).values():
            conn.close()
        self._idle.conns = {}

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _auth_header(self, scope: str) -> dict[str, str]:
        with self._lock:
            token = self._token.get(scope) or self._token.get("*")
        return {"Authorization": token} if token else {}

    def _authenticate(self, challenge: str, scope: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self._creds is None:
                raise RegistryAuthError(f"registry {self.ref.registry} needs credentials and none were "
                                        "found (docker config, REGISTRY_AUTH_FILE, or an auth file)")
            with self._lock:
                self._token["*"] = self._creds.basic_header()
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryProtocolError(f"registry {self.ref.registry}: unsupported auth challenge {scheme!r}")
        realm_scheme, realm_host = check_realm(params["realm"], self.ref.registry)
        if realm_scheme != "https" and not self.ref.loopback and self.scheme == "https":
            raise RegistryAuthError(f"registry {self.ref.registry}: token realm is not HTTPS; refused")
        q = {"service": params.get("service", "")}
        q["scope"] = params.get("scope") or scope
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(q)
        send = self._creds is not None and may_send_credentials(
            realm_scheme, realm_host, self.ref.registry, registry_scheme=self.scheme)
        headers = {"Authorization": self._creds.basic_header()} if send else {}
        r = self._once("GET", url, headers, None, False, MAX_SMALL_BODY)
        if r.status in (401, 403):
            raise RegistryAuthError(f"registry {self.ref.registry} refused the credentials (token service)")
        if r.status != 200:
            raise _Transient(f"token service answered HTTP {r.status}")
        try:
            doc = json.loads(r.body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryProtocolError(f"registry {self.ref.registry}: token service answered no token")
        with self._lock:
            self._token[scope] = f"Bearer {token}"

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None, body=None,
                ok: Iterable[int] = (200,), stream: bool = False, limit: int = MAX_SMALL_BODY,
                scope: str | None = None, what: str = "") -> Response:
        """One API call with auth and retries. `body` may be bytes or a callable opening a file."""
        scope = scope or f"repository:{self.repository}:pull"
        url = path if "://" in path else self._url(path)
        with self.operation():
            return self._retrying(lambda: self._call(method, url, headers or {}, body, set(ok), stream,
                                                     limit, scope, what))

    def _call(self, method, url, headers, body, ok, stream, limit, scope, what) -> Response:
        authed = False
        while True:
            r = self._once(method, url, {**headers, **self._auth_header(scope)}, body, stream, limit)
            if r.status == 401 and not authed and "www-authenticate" in r.headers:
                self._authenticate(r.headers["www-authenticate"], scope)
                authed = True
                continue
            if r.status in ok:
                return r
            r.close()
            if r.status in (401, 403):
                raise RegistryAuthError(f"registry {self.ref.registry} refused access to "
                                        f"{self.repository} (HTTP {r.status}); check the credentials")
            if r.status in _RETRY_STATUS:
                raise _Transient(f"HTTP {r.status}", _retry_after(r.headers.get("retry-after")))
            if r.status == 404:
                raise NotFound(f"{self.ref.registry}/{self.repository}: {what or url} not found"
                               f"{_error_code(r.body)}")
            code = _error_code(r.body)
            cls = BlobUnknown if "BLOB_UNKNOWN" in code else RegistryProtocolError
            raise cls(f"registry {self.ref.registry}: {method} {what or 'request'} answered HTTP {r.status}{code}")

    def _retrying(self, fn: Callable):
        p = self.retry
        start = time.monotonic()
        delay = p.first_delay
        op = getattr(self._ops, "op", None)
        for attempt in range(1, p.attempts + 1):
            try:
                return fn()
            except _Transient as t:
                last = t.why
                wait = min(t.retry_after if t.retry_after is not None else delay, p.max_delay)
                if op is not None and (op.expired or op.remaining() <= wait):
                    if op.by_budget:
                        raise RegistryUnavailable(f"registry {self.ref.registry}: the cache's time "
                                                  "budget for this build is spent") from None
                    raise RegistryUnavailable(f"registry {self.ref.registry}: no complete answer within "
                                              f"{op.seconds:.0f} s ({last}); given up") from None
                if attempt == p.attempts or time.monotonic() - start + wait > p.total:
                    break
                time.sleep(wait)
                delay = min(delay * 2, p.max_delay)
        raise RegistryUnavailable(f"registry {self.ref.registry} unavailable after {attempt} "
                                  f"attempt(s): {last}")

    # ---- API ----------------------------------------------------------------------------
    def ping(self) -> None:
        """GET /v2/: reachable, speaks the API, and our credentials (if needed) work."""
        self.request("GET", "/v2/", what="API root", scope=f"repository:{self.repository}:pull")

    def blob_exists(self, digest: str) -> bool:
        try:
            self.request("HEAD", f"/v2/{self.repository}/blobs/{_check_digest(digest)}", what=f"blob {digest}")
            return True
        except NotFound:
            return False

    def get_blob(self, digest: str, dest: str | os.PathLike, *, size: int | None = None) -> Path:
        """Stream blob `digest` to `dest`; `dest` appears only when the bytes are verified."""
        _check_digest(digest)
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}-{threading.get_ident()}")

        def attempt():
            r = self.request("GET", f"/v2/{self.repository}/blobs/{digest}", stream=True,
                             what=f"blob {digest}")
            length = _int(r.headers.get("content-length"))
            if size is not None and length is not None and length > size:
                r.close()
                raise DigestMismatch(f"registry {self.ref.registry}: blob {digest} is answered with "
                                     f"{length} bytes, its descriptor says {size}; refused")
            h = hashlib.sha256()
            n = 0
            meter = _Transfer("pull", self.ref.registry, digest, size or _int(r.headers.get("content-length")) or 0)
            try:
                with open(tmp, "wb") as f:
                    # read1: one socket read at a time (a trickle cannot keep one call busy), and
                    # never past the declared size (one byte more proves the answer too long).
                    while chunk := r.raw.read1(CHUNK if size is None else min(CHUNK, size + 1 - n)):
                        h.update(chunk)
                        f.write(chunk)
                        n += len(chunk)
                        meter.add(len(chunk))
                        if size is not None and n > size:
                            break
            except (OSError, http.client.HTTPException) as e:
                if isinstance(e, OSError) and e.errno is not None and not isinstance(e, (ConnectionError, socket.timeout)):
                    # A local fault (full disk, read-only folder): the user's to fix, not retried.
                    raise UserError(f"cannot write blob {digest}: {e.strerror}", file=str(dest)) from None
                raise _Transient(f"blob {digest} download broke off: {_describe(e)}") from None
            finally:
                r.close()
            expected = size if size is not None else _int(r.headers.get("content-length"))
            if expected is not None and n < expected:
                raise _Transient(f"blob {digest} cut short ({n} of {expected} bytes)")
            got = "sha256:" + h.hexdigest()
            if size is not None and n > size:
                raise DigestMismatch(f"registry {self.ref.registry}: blob {digest} is longer than the "
                                     f"{size} bytes its descriptor says; refused")
            if got != digest or (size is not None and n != size):
                raise DigestMismatch(f"registry {self.ref.registry}: blob {digest} has digest {got} "
                                     f"({n} bytes); refused")
            meter.finish()
            return None

        try:
            with self.operation(size or 0):
                self._retrying(attempt)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
        return dest

    def fetch_blob(self, digest: str, *, limit: int = MAX_MANIFEST) -> bytes:
        """A small blob (config, metadata) into memory, verified; never more than `limit` bytes."""
        with self.operation(limit):
            r = self.request("GET", f"/v2/{self.repository}/blobs/{_check_digest(digest)}", limit=limit,
                             what=f"blob {digest}")
        _verify(r.body, digest, f"registry {self.ref.registry}: blob")
        return r.body

    def put_blob(self, source: bytes | str | os.PathLike, digest: str | None = None,
                 *, mount_from: str | None = None) -> str:
        """Upload a blob (bytes or a file) unless the registry has it. Returns its digest."""
        if isinstance(source, bytes):
            digest = digest or "sha256:" + hashlib.sha256(source).hexdigest()
            size = len(source)
            body = lambda: source  # noqa: E731
        else:
            path = Path(source)
            digest = digest or _file_digest(path)
            size = path.stat().st_size
            body = lambda: _Counted(open(path, "rb"), _Transfer("push", self.ref.registry, digest, size))  # noqa: E731, SIM115
        _check_digest(digest)
        if self.blob_exists(digest):
            return digest
        push = f"repository:{self.repository}:pull,push"

        def attempt():
            q = f"?mount={digest}&from={urllib.parse.quote(mount_from)}" if mount_from else ""
            r = self._call("POST", self._url(f"/v2/{self.repository}/blobs/uploads/{q}"),
                           {"Content-Length": "0"}, b"", {201, 202}, False, MAX_SMALL_BODY, push,
                           "blob upload")
            if r.status == 201:
                return  # mounted from another repository
            loc = r.headers.get("location")
            if not loc:
                raise RegistryProtocolError(f"registry {self.ref.registry}: upload has no Location")
            url = urllib.parse.urljoin(self._url("/"), loc)
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
            self._call("PUT", url, {"Content-Type": "application/octet-stream",
                                    "Content-Length": str(size)}, body, {201}, False,
                       MAX_SMALL_BODY, push, f"blob {digest}")

        with self.operation(size):
            self._retrying(attempt)
        return digest

    def get_manifest(self, reference: str, *, accept: Iterable[str] = oci.MANIFEST_TYPES) -> tuple[str, str, bytes]:
        """(media type, digest, bytes) of a manifest by tag or digest, verified."""
        accept = tuple(accept)
        r = self.request("GET", f"/v2/{self.repository}/manifests/{reference}",
                         headers={"Accept": ", ".join(accept)}, limit=MAX_MANIFEST,
                         what=f"manifest {reference}")
        media = r.headers.get("content-type", "").split(";")[0].strip()
        try:
            declared = msgspec.json.decode(r.body, type=oci.MediaTypeOnly).mediaType
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise RegistryProtocolError(f"registry {self.ref.registry}: manifest {reference} is not "
                                        "valid JSON") from None
        if media not in accept or (declared and declared != media):
            raise RegistryProtocolError(f"registry {self.ref.registry}: manifest {reference} has media "
                                        f"type {media or declared!r}, expected one of {', '.join(accept)}")
        digest = "sha256:" + hashlib.sha256(r.body).hexdigest()
        if reference.startswith("sha256:") and reference != digest:
            raise DigestMismatch(f"registry {self.ref.registry}: manifest {reference} has digest {digest}; refused")
        claimed = r.headers.get("docker-content-digest")
        if claimed and claimed != digest:
            raise DigestMismatch(f"registry {self.ref.registry}: manifest {reference} claims {claimed} "
                                 f"but its bytes are {digest}; refused")
        return media, digest, r.body

    def manifest_digest(self, reference: str) -> str | None:
        """HEAD a manifest: its digest, or None when absent."""
        try:
            r = self.request("HEAD", f"/v2/{self.repository}/manifests/{reference}",
                             headers={"Accept": ", ".join(oci.MANIFEST_TYPES)}, what=f"manifest {reference}")
        except NotFound:
            return None
        return r.headers.get("docker-content-digest")

    def put_manifest(self, reference: str, data: bytes, media_type: str = oci.MANIFEST) -> str:
        """PUT a manifest under a tag or its digest; returns its digest (checked)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if reference.startswith("sha256:") and reference != digest:
            raise ValueError(f"manifest bytes have digest {digest}, not {reference}")
        r = self.request("PUT", f"/v2/{self.repository}/manifests/{reference}",
                         headers={"Content-Type": media_type}, body=data, ok=(201,),
                         scope=f"repository:{self.repository}:pull,push", what=f"manifest {reference}")
        claimed = r.headers.get("docker-content-digest")
        if claimed and claimed != digest:
            raise DigestMismatch(f"registry {self.ref.registry}: stored manifest as {claimed}, "
                                 f"its bytes are {digest}")
        subject = msgspec.json.decode(data, type=oci.MediaTypeOnly).subject
        if subject is not None and "oci-subject" not in r.headers:
            self._add_fallback_referrer(subject.digest, data, media_type, digest)
        return digest

    def tags(self) -> list[str]:
        """Every tag of the repository (following pagination); [] when the repository is absent."""
        out: list[str] = []
        path = f"/v2/{self.repository}/tags/list?n=1000"
        while path:
            try:
                r = self.request("GET", path, limit=MAX_MANIFEST, what="tag list")
            except NotFound:
                return out
            try:
                out += json.loads(r.body).get("tags") or []
            except (ValueError, AttributeError):
                raise RegistryProtocolError(f"registry {self.ref.registry}: tag list is not valid JSON") from None
            link = r.headers.get("link", "")
            path = link[link.find("<") + 1:link.find(">")] if link.startswith("<") else ""
        return out

    def referrers(self, digest: str, artifact_type: str | None = None) -> list[oci.Descriptor]:
        """Manifests whose subject is `digest`: the referrers API, else the fallback tag."""
        _check_digest(digest)
        try:
            r = self.request("GET", f"/v2/{self.repository}/referrers/{digest}",
                             headers={"Accept": oci.INDEX}, limit=MAX_MANIFEST, what="referrers")
            ctype = r.headers.get("content-type", "").split(";")[0]
            index = _decode_index(r.body, self.ref.registry) if ctype == oci.INDEX else None
        except NotFound:
            index = None
        if index is None:
            index = self._fallback_index(digest)
        return [d for d in index.manifests if artifact_type is None or d.artifact_type == artifact_type]

    def _fallback_index(self, digest: str) -> oci.Index:
        try:
            _, _, data = self.get_manifest(_fallback_tag(digest), accept=(oci.INDEX,))
        except NotFound:
            return oci.Index(manifests=[])
        return _decode_index(data, self.ref.registry)

    def _add_fallback_referrer(self, subject: str, data: bytes, media_type: str, digest: str) -> None:
        doc = msgspec.json.decode(data, type=oci.MediaTypeOnly)
        art = doc.artifactType or (doc.config.media_type if doc.config else None)
        desc = oci.Descriptor(media_type=media_type, digest=digest, size=len(data),
                              artifact_type=art, annotations=doc.annotations)
        index = self._fallback_index(subject)
        if any(d.digest == digest for d in index.manifests):
            return
        index.manifests.append(desc)
        self.put_manifest(_fallback_tag(subject), msgspec.json.encode(index), oci.INDEX)

    # ---- several at once ----------------------------------------------------------------
    def push_blobs(self, sources: Iterable[str | os.PathLike | bytes]) -> list[str]:
        """Upload several blobs at once (HEAD first, only missing ones are sent)."""
        with ThreadPoolExecutor(self.workers) as ex:
            return list(ex.map(events.bound(self.put_blob), sources))

    def pull_blobs(self, wanted: Iterable[tuple[str, str | os.PathLike, int | None]]) -> list[Path]:
        """Download several (digest, dest, size) at once, each verified before it is in place."""
        with ThreadPoolExecutor(self.workers) as ex:
            return list(ex.map(events.bound(lambda w: self.get_blob(w[0], w[1], size=w[2])), wanted))


class _Transfer:
    """A blob's bytes on the way, as progress events (docs/progress.md), now and then."""

    def __init__(self, direction: str, registry: str, digest: str, total: int):
        self.on = events.active()
        self.direction, self.registry, self.digest = direction, registry, digest
        self.rate = events.Rate(total)

    def _emit(self, done: bool) -> None:
        events.emit(events.TransferProgress(direction=self.direction, registry=self.registry, digest=self.digest,
                                            bytes_done=self.rate.done, bytes_total=self.rate.total,
                                            rate=round(self.rate.rate), done=done))

    def add(self, n: int) -> None:
        if self.on and self.rate.add(n):
            self._emit(False)

    def finish(self) -> None:
        if self.on:
            self._emit(True)


class _Counted:
    """A file whose reads are counted as a transfer (an upload's body); http.client reads it."""

    def __init__(self, f, meter: _Transfer):
        self.f, self.meter = f, meter

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if data:
            self.meter.add(len(data))
        else:
            self.meter.finish()
        return data

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def _fallback_tag(digest: str) -> str:
    return digest.replace(":", "-")


def _decode_index(data: bytes, registry: str) -> oci.Index:
    try:
        return msgspec.json.decode(data, type=oci.Index)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise RegistryProtocolError(f"registry {registry}: referrers index is invalid ({e})") from None


def _read_limited(r, limit: int, registry: str) -> bytes:
    length = _int(r.getheader("content-length"))
    if length is not None and length > limit:
        raise RegistryProtocolError(f"registry {registry}: answer of {length} bytes exceeds {limit}; refused")
    body = r.read(limit + 1)
    if len(body) > limit:
        raise RegistryProtocolError(f"registry {registry}: answer exceeds {limit} bytes; refused")
    if length is not None and len(body) < length:
        raise _Transient(f"answer cut short ({len(body)} of {length} bytes)")
    return body


def _verify(data: bytes, digest: str, what: str) -> None:
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        raise DigestMismatch(f"{what} {digest} has digest {got}; refused")


def _check_digest(digest: str) -> str:
    if not (digest.startswith("sha256:") and len(digest) == 71
            and all(c in "0123456789abcdef" for c in digest[7:])):
        raise RegistryError(f"not a sha256 digest: {digest!r}")
    return digest


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _retry_after(v: str | None) -> float | None:
    try:
        return max(0.0, float(v)) if v else None
    except ValueError:
        return None


def _error_code(body: bytes) -> str:
    """The registry's error code (e.g. MANIFEST_INVALID), never its free text (which may echo input)."""
    try:
        codes = [e["code"] for e in json.loads(body)["errors"] if isinstance(e.get("code"), str)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""
    return f" ({', '.join(codes)})" if codes else ""


def _describe(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ConnectionResetError):
        return "connection reset"
    if isinstance(e, ssl.SSLError):
        return f"TLS error: {e.reason or e.__class__.__name__}"
    if isinstance(e, http.client.IncompleteRead):
        return "answer cut short"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return e.__class__.__name__
