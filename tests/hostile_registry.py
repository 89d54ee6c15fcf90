"""A hostile registry for tests: http.server in a thread on 127.0.0.1 (port 0) that speaks enough
of the distribution API (`/v2/`, manifests, blobs, tags, uploads, a token endpoint) to serve
crafted answers behind `--cache oci://127.0.0.1:PORT/team/cache`.

Every `layer-<input>` tag is answered with an lxclayer layer entry made up on the spot for that
input: one file of `file_size` bytes, in one pack, made by `builder`: by default the builder of
the bottom layer of the tests' project (`import`, conftest.write_project's `base`), so that this
layer's entry is downloaded (and what is wrong with it met) while the others are refused before
(in "honest" mode, "hostile/0": every entry is refused before). What is wrong with it is the `mode`:

- ``honest``: nothing (the entry is well formed; its builder is not this build's, so it is
  refused, before its pack is downloaded);
- ``claim``: the pack's descriptor says 10 GiB; its blob is zeros under a 10 GiB Content-Length;
- ``length``: the pack's descriptor is right, its answer says Content-Length 10 GiB (zeros);
- ``bomb``: the pack's only member says `bomb_size` bytes (zeros: a few KB of zstd);
- ``loris-manifest`` / ``loris-blob``: headers, then one byte every `trickle` seconds;
- ``slow``: every manifest answer (a 404) after `delay` seconds;
- ``realm``: `/v2/` and everything else answer 401 with `challenge`;
- ``missing`` / ``bad-digest``: the pack's descriptor names a blob the registry lacks, or a
  digest that is not one;
- ``fail``: every request answers 500.
- ``unsafe``: the entry's one file is `../../etc/hostile` (the entry gate refuses it);
- ``ok`` (or any other name): nothing wrong, made by `builder`.

`sent` counts the body bytes written per path and `hits` the requests per path, so a test can
assert that reads stay bounded and that nothing is retried.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
import time
from collections import Counter

import msgspec
import xxhash
import zstandard

from lxclayer.digest import digest
from lxclayer.manifest import Entry
from lxclayer.registry import oci
from lxclayer.store import LayerMeta
from lxclayer.store.registry import LAYER_TYPE, MANIFEST_TYPE, META_TYPE, OUTPUT, PACK_TYPE

from . import http_support

REPO = "team/cache"
TEN_GIB = 10 << 30
STREAM_CAP = 32 << 20  # a "10 GiB" answer stops after this many bytes (the test must not take long)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def bomb_pack(name: str, size: int) -> bytes:
    """A zstd tar whose one member `name` says `size` bytes of zeros: a few KB for a GiB."""
    out = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=1)
    with cctx.stream_writer(out, closefd=False) as w:
        info = tarfile.TarInfo(name)
        info.size, info.mode = size, 0o444
        w.write(info.tobuf(format=tarfile.GNU_FORMAT))
        zeros = bytes(1 << 20)
        left = size
        while left:
            n = min(left, len(zeros))
            w.write(zeros[:n])
            left -= n
        w.write(bytes(-size % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE))
    return out.getvalue()


def honest_pack(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o444
        tf.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor(level=3).compress(buf.getvalue())


class HostileRegistry:
    def __init__(self, mode: str = "honest", *, file_size: int = 9, bomb_size: int = 768 << 20,
                 trickle: float = 2.0, delay: float = 1.0, challenge: str = "", builder: str | None = None):
        if builder is None:
            from lxclayer import kinds

            builder = "hostile/0" if mode == "honest" else f"import/{kinds.spec('import').version}"
        self.builder = builder
        self.mode, self.file_size, self.bomb_size = mode, file_size, bomb_size
        self.trickle, self.delay, self.challenge = trickle, delay, challenge
        self.blobs: dict[str, bytes] = {}
        self.sent: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self.headers: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                owner._serve(self, "GET")

            def do_HEAD(self):
                owner._serve(self, "HEAD")

            def do_POST(self):
                owner._serve(self, "POST")

            def do_PUT(self):
                owner._serve(self, "PUT")

        self.server = http_support.start(Handler)
        self.port = self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"oci://127.0.0.1:{self.port}/{REPO}"

    def close(self) -> None:
        self.stopping.set()
        http_support.stop(self.server)

    # --- the crafted entry ------------------------------------------------------------------

    def _entry(self, input_digest: str) -> bytes:
        data = (input_digest.encode() * (self.file_size // max(1, len(input_digest)) + 1))[:self.file_size]
        h = xxhash.xxh3_128_hexdigest(data)
        entries = [Entry(path="etc", type="dir", mode=0o755),
                   Entry(path="etc/hostile", type="file", mode=0o644, size=len(data), hash=h)]
        if self.mode == "unsafe":  # consistent in itself, but it leaves the root
            entries = [Entry(path="../../etc/hostile", type="file", mode=0o644, size=len(data), hash=h)]
        raw = msgspec.msgpack.encode(entries)
        out = digest(entries)
        meta = msgspec.json.encode(LayerMeta(input=input_digest, output=out, kind="files",
                                             builder=self.builder))
        pack = bomb_pack(h, self.bomb_size) if self.mode == "bomb" else honest_pack(h, data)
        with self._lock:
            for b in (meta, raw, pack):
                self.blobs[_sha(b)] = b
        size = TEN_GIB if self.mode == "claim" else len(pack)
        pack_digest = _sha(pack)
        if self.mode == "missing":
            with self._lock:
                del self.blobs[pack_digest]
        elif self.mode == "bad-digest":
            pack_digest = "sha256:../../../../etc/passwd"
        return msgspec.json.encode(oci.Manifest(
            artifact_type=LAYER_TYPE,
            config=oci.Descriptor(media_type=META_TYPE, digest=_sha(meta), size=len(meta)),
            layers=[oci.Descriptor(media_type=MANIFEST_TYPE, digest=_sha(raw), size=len(raw)),
                    oci.Descriptor(media_type=PACK_TYPE, digest=pack_digest, size=size)],
            annotations={OUTPUT: out}))

    # --- answers ----------------------------------------------------------------------------

    def _serve(self, h: http.server.BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?")[0]
        with self._lock:
            self.hits[path] += 1
            self.headers.append((method, path, {k.lower(): v for k, v in h.headers.items()}))
        length = int(h.headers.get("content-length") or 0)
        if length:
            h.rfile.read(length)
        if self.mode == "fail":
            return self._answer(h, 500, b'{"errors":[{"code":"UNKNOWN"}]}')
        if self.mode == "realm":
            return self._answer(h, 401, b"{}", {"WWW-Authenticate": self.challenge})
        if path == "/v2/":
            return self._answer(h, 200, b"{}")
        prefix = f"/v2/{REPO}/"
        if not path.startswith(prefix):
            return self._answer(h, 404, b"{}")
        rest = path[len(prefix):]
        if rest.startswith("manifests/"):
            tag = rest.removeprefix("manifests/")
            if self.mode == "slow":
                time.sleep(self.delay)
            if not tag.startswith("layer-") or self.mode == "slow":
                return self._answer(h, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            body = self._entry(tag.removeprefix("layer-"))
            hdrs = {"Content-Type": oci.MANIFEST, "Docker-Content-Digest": _sha(body)}
            if self.mode == "loris-manifest":
                return self._trickle(h, path, body, hdrs)
            return self._answer(h, 200, body, hdrs, head=method == "HEAD")
        if rest.startswith("blobs/") and method in ("GET", "HEAD"):
            d = rest.removeprefix("blobs/")
            with self._lock:
                body = self.blobs.get(d)
            if body is None:
                return self._answer(h, 404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
            is_pack = body[:4] == b"\x28\xb5\x2f\xfd"
            if is_pack and self.mode in ("claim", "length"):
                return self._zeros(h, path)
            if is_pack and self.mode == "loris-blob":
                return self._trickle(h, path, body, {})
            return self._answer(h, 200, body, head=method == "HEAD")
        if rest.startswith("tags/list"):
            return self._answer(h, 200, json.dumps({"name": REPO, "tags": []}).encode())
        return self._answer(h, 404, b"{}")

    def _answer(self, h, status: int, body: bytes, headers: dict[str, str] | None = None, *,
                head: bool = False) -> None:
        try:
            h.send_response(status)
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if not head:
                h.wfile.write(body)
                with self._lock:
                    self.sent[h.path.split("?")[0]] += len(body)
        except OSError:
            pass

    def _zeros(self, h, path: str) -> None:
        """Content-Length 10 GiB, then zeros until the client hangs up (or STREAM_CAP)."""
        try:
            h.send_response(200)
            h.send_header("Content-Length", str(TEN_GIB))
            h.end_headers()
            block = bytes(1 << 16)
            while self.sent[path] < STREAM_CAP and not self.stopping.is_set():
                h.wfile.write(block)
                with self._lock:
                    self.sent[path] += len(block)
        except OSError:
            pass
        h.close_connection = True

    def _trickle(self, h, path: str, body: bytes, headers: dict[str, str]) -> None:
        """Headers, then one byte every `trickle` seconds (a slow loris)."""
        try:
            h.send_response(200)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.flush()
            for i in range(len(body)):
                if self.stopping.wait(self.trickle):
                    break
                h.wfile.write(body[i:i + 1])
                h.wfile.flush()
                with self._lock:
                    self.sent[path] += 1
        except OSError:
            pass
        h.close_connection = True


class TokenServer:
    """A token endpoint (and optionally a redirect to another one) that records the requests'
    Authorization headers."""

    def __init__(self, redirect_to: str | None = None):
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                owner.seen.append((self.path, self.headers.get("Authorization")))
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b'{"token":"t0ken"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        http_support.stop(self.server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
