"""lxclayer.download: one policy for every download (issue 19, items 3 and 7): what is retried,
what is not, short reads, sizes, sha256, proxies, and one-line errors naming the URL."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import pytest

from lxclayer import download
from lxclayer.download import DownloadError

from . import http_support
from .conftest import run_cli, write_project

BODY = b"pinned bytes\n" * 1000
SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    plan: dict[str, list] = {}  # path -> what to answer in turn: an HTTP status, or "short"
    seen: list[str] = []
    body = BODY

    def do_GET(self):  # noqa: N802 - the name http.server calls
        self.seen.append(self.path)
        todo = self.plan.get(self.path, [])
        step = todo.pop(0) if todo else 200
        if step == "short":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body[:100])
            self.close_connection = True
            return
        if step != 200:
            self.send_error(step)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(download, "BACKOFF", 0.01)
    _Handler.plan, _Handler.seen = {}, []
    srv = http_support.start(_Handler)
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Handler
    http_support.stop(srv)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_transient_faults_are_retried_with_back_off(server, tmp_path):
    base, h = server
    h.plan = {"/a": [503, "short", 502]}
    dest = tmp_path / "out" / "f"
    assert download.fetch([f"{base}/a"], dest, sha256=SHA, size=len(BODY)) == f"{base}/a"
    assert dest.read_bytes() == BODY
    assert h.seen == ["/a"] * 4
    assert leftovers(dest.parent) == ["f"]


def test_gone_moves_to_the_next_url_at_once_and_says_where_it_was_tried(server, tmp_path):
    base, h = server
    h.plan = {"/a": [404], "/b": [410]}
    with pytest.raises(DownloadError) as e:
        download.fetch([f"{base}/a", f"{base}/b"], tmp_path / "f", sha256=SHA)
    assert e.value.kind == "gone"
    assert e.value.tried == [(f"{base}/a", "HTTP 404"), (f"{base}/b", "HTTP 410")]
    assert h.seen == ["/a", "/b"]
    h.seen.clear()
    h.plan = {"/a": [404]}
    assert download.fetch([f"{base}/a", f"{base}/c"], tmp_path / "f", sha256=SHA) == f"{base}/c"


def test_a_body_cut_short_every_time_is_one_line_naming_the_url(server, tmp_path):
    base, h = server
    h.plan = {"/a": ["short"] * download.RETRIES}
    with pytest.raises(DownloadError) as e:
        download.fetch([f"{base}/a"], tmp_path / "f", sha256=SHA)
    assert str(e.value) == f"{base}/a: the body ended after 100 of {len(BODY)} bytes"
    assert len(h.seen) == download.RETRIES
    assert leftovers(tmp_path) == []


def test_other_bytes_or_another_size_are_corrupt_and_never_land(server, tmp_path):
    base, h = server
    with pytest.raises(DownloadError) as e:
        download.fetch([f"{base}/a"], tmp_path / "f", sha256="0" * 64)
    assert e.value.kind == "corrupt" and f"sha256 is {SHA}, expected {'0' * 64}" in str(e.value)
    with pytest.raises(DownloadError) as e:
        download.fetch([f"{base}/a"], tmp_path / "f", sha256=SHA, size=len(BODY) + 1)
    assert e.value.kind == "corrupt" and f"the server says {len(BODY)} bytes, the pin says {len(BODY) + 1}" in str(e.value)
    assert h.seen == ["/a", "/a"]  # not retried
    assert leftovers(tmp_path) == []


def test_an_unreachable_host_gets_one_quick_retry_and_credentials_are_never_shown(server, tmp_path):
    port = closed_port()
    t = time.monotonic()
    with pytest.raises(DownloadError) as e:
        download.fetch([f"http://user:s3cret@127.0.0.1:{port}/x", "http://nonexistent.invalid/x"],
                       tmp_path / "f", sha256=SHA)
    assert time.monotonic() - t < 10
    assert e.value.kind == "unreachable"
    text = str(e.value)
    assert "s3cret" not in text and "user" not in text
    assert text.startswith(f"http://***@127.0.0.1:{port}/x: connection refused; http://nonexistent.invalid/x: ")


def _garbage_proxy():
    """A "proxy" that answers one line that is not HTTP, then closes (what a broken proxy said
    in issue 19, item 3)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    seen: list[bytes] = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                seen.append(c.recv(4096))
                c.sendall(b"ERROR 2024/01/01 opensock: Could not retrieve address info\n")
    threading.Thread(target=serve, daemon=True).start()
    return srv, seen


def test_a_proxy_answering_garbage_is_one_line_naming_the_url(server, tmp_path, monkeypatch):
    base, h = server
    srv, seen = _garbage_proxy()
    try:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{srv.getsockname()[1]}")
        with pytest.raises(DownloadError) as e:
            download.fetch([f"{base}/a"], tmp_path / "f", sha256=SHA)
    finally:
        srv.close()
    assert str(e.value) == (f"{base}/a: the answer is not HTTP ('ERROR 2024/01/01 opensock: Could not retrieve "
                            "address info'): a proxy or server fault")
    assert len(seen) == 2 and seen[0].startswith(f"GET {base}/a HTTP/1.1".encode())  # it went to the proxy
    assert h.seen == []


def test_an_import_through_a_garbage_proxy_is_one_line_and_no_traceback(tmp_path, monkeypatch):
    project = write_project(tmp_path / "proj")
    b = project / "layers/base/layer.toml"
    b.write_text(b.read_text().replace('path = "base.tar"', 'url = "http://mirror.lxclayer.test/base.tar"'))
    srv, seen = _garbage_proxy()
    try:
        r = run_cli("--project", str(project), "--store", str(tmp_path / "store"), "build",
                    env={"http_proxy": f"http://127.0.0.1:{srv.getsockname()[1]}", "no_proxy": ""})
    finally:
        srv.close()
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    # the one error line (the build's log path may follow it: docs/progress.md)
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("lxclayer: error:")] == [
        "lxclayer: error: layers/base/layer.toml: key url: cannot download base.tar: http://mirror.lxclayer.test/"
        "base.tar: the answer is not HTTP ('ERROR 2024/01/01 opensock: Could not retrieve address info'): a proxy "
        "or server fault"]
    assert seen and seen[0].startswith(b"GET http://mirror.lxclayer.test/base.tar HTTP/1.1")


def test_no_proxy_is_honoured(server, tmp_path, monkeypatch):
    base, h = server
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    download.fetch([f"{base}/a"], tmp_path / "f", sha256=SHA)
    assert h.seen == ["/a"]


def test_read_returns_the_body_and_where_it_came_from(server):
    base, h = server
    h.plan = {"/idx": [500]}
    body, url = download.read([f"{base}/idx"])
    assert (body, url) == (BODY, f"{base}/idx")
    with pytest.raises(DownloadError) as e:
        download.read([f"{base}/idx"], limit=10)
    assert str(e.value) == f"{base}/idx: larger than 10 bytes"


def test_credentials_in_a_url_are_sent_as_basic_auth(server, tmp_path, monkeypatch):
    base, h = server
    got: list[str | None] = []
    orig = _Handler.do_GET

    def spy(self):
        got.append(self.headers.get("Authorization"))
        orig(self)

    monkeypatch.setattr(_Handler, "do_GET", spy)
    url = base.replace("http://", "http://me:pa%3Ass@") + "/a"
    assert download.fetch([url], tmp_path / "f", sha256=SHA) == url
    assert got == ["Basic bWU6cGE6c3M="]  # me:pa:ss
