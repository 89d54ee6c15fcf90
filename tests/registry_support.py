"""A real registry for tests: Debian's docker-registry (CNCF distribution 2.8) on 127.0.0.1 with
htpasswd auth and a temporary storage directory, plus a loopback HTTP proxy that injects faults."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from . import http_support
from .e2e_support import require_tools

USER, PASSWORD = "builder", "s3cret-Pa55word"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, root: Path):
        require_tools("docker-registry", "htpasswd")
        self.root = root
        self.storage = root / "storage"
        self.storage.mkdir(parents=True)
        self.port = free_port()
        htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True,
                                  capture_output=True, text=True).stdout
        (root / "htpasswd").write_text(htpasswd)
        (root / "config.yml").write_text(f"""\
version: 0.1
log: {{level: error}}
storage:
  filesystem: {{rootdirectory: {self.storage}}}
  delete: {{enabled: true}}
http: {{addr: "127.0.0.1:{self.port}", secret: test-only}}
auth:
  htpasswd: {{realm: test, path: {root / 'htpasswd'}}}
""")
        self.proc = None
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log = open(self.root / "registry.log", "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.root / "config.yml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1)
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.root / 'registry.log').read_text()}")
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start in 15 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


class FaultProxy:
    """HTTP proxy on loopback in front of the registry. `faults` is a list of
    (predicate(method, path) -> bool, action) consumed in order; actions: "503", "429", "drop"
    (close without answering), "cut" (send headers and half the body), "corrupt" (flip a byte),
    "huge" (announce a 100 MB answer)."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.faults: list = []
        self.always: str | None = None   # an action applied to every request
        # When set, the proxy plays a registry with bearer-token auth: clients must fetch this
        # token from /token (with the registry's basic credentials) and present it.
        self.bearer_token: str | None = None
        self.token_requests: list[str] = []
        self.seen: list[tuple[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_one(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                proxy.seen.append((self.command, self.path))
                if proxy.bearer_token and self.bearer():
                    return
                action = proxy.take(self.command, self.path)
                if action == "huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(100 * 1024 * 1024))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(b"{" + b" " * 65536)
                    return
                if action in ("503", "429"):
                    self.send_response(int(action))
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    return
                if action == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = dict(self.headers.items())  # Host kept: Location URLs then name the proxy
                conn.request(self.command, self.path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                conn.close()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                length = int(r.getheader("Content-Length") or len(data)) if self.command == "HEAD" else len(data)
                self.send_header("Content-Length", str(length))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command == "HEAD":
                    return
                if action == "cut":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "corrupt" and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                self.wfile.write(data)

            def bearer(self) -> bool:
                """Answer the request here (token endpoint, or 401) and return True, or swap the
                bearer token for the registry's basic credentials and return False."""
                basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.path.startswith("/token"):
                    proxy.token_requests.append(self.path)
                    ok = self.headers.get("Authorization") == basic
                    body = json.dumps({"token": proxy.bearer_token}).encode() if ok else b"{}"
                    self.send_response(200 if ok else 401)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                    return True
                if self.headers.get("Authorization") != f"Bearer {proxy.bearer_token}":
                    repo = self.path.split("/")[2] if self.path.count("/") > 2 else ""
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", f'Bearer realm="http://{proxy.address}/token",'
                                     f'service="test-registry",scope="repository:{repo}:pull"')
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    return True
                del self.headers["Authorization"]
                self.headers["Authorization"] = basic
                return False

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_one

        self.server = http_support.start(Handler)
        self.port = self.server.server_address[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def take(self, method: str, path: str):
        if self.always:
            return self.always
        for i, (pred, action) in enumerate(self.faults):
            if pred(method, path):
                del self.faults[i]
                return action
        return None

    def close(self) -> None:
        http_support.stop(self.server)


def auth_file(path: Path, address: str) -> Path:
    """A docker-style auth file at `path` holding the test registry's credentials for `address`."""
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    path.write_text(json.dumps({"auths": {address: {"auth": token}}}))
    return path


def blob_get(method: str, path: str) -> bool:
    return method == "GET" and "/blobs/sha256:" in path


def registry_fixture():
    """A module-scoped pytest fixture: one registry for the tests of a module."""
    import pytest

    @pytest.fixture(scope="module")
    def registry(tmp_path_factory):
        reg = Registry(tmp_path_factory.mktemp("registry"))
        yield reg
        reg.stop()

    return registry
