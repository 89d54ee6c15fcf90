"""Downloading pinned artifacts: a transient failure is tried again, and the error says what failed."""

from __future__ import annotations

import hashlib
import http.server

import pytest

from lxclayer import download
from lxclayer.debian import fetch
from lxclayer.errors import BuildError
from lxclayer.lock.model import Artifact
from lxclayer.store import Store

from . import http_support

BODY = b"a .deb, as far as the fetcher knows\n" * 100


class _Handler(http.server.BaseHTTPRequestHandler):
    # path -> the statuses to answer in turn; after the list runs out, 200 with BODY
    plan: dict[str, list[int]] = {}
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - the name http.server calls
        self.seen.append(self.path)
        todo = self.plan.get(self.path, [])
        if todo:
            self.send_error(todo.pop(0))
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(download, "BACKOFF", 0.01)
    _Handler.plan, _Handler.seen = {}, []
    srv = http_support.start(_Handler)
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Handler
    http_support.stop(srv)


def _fetch(store, tmp_path, urls):
    a = Artifact(name="pkg", version="1", sha256=hashlib.sha256(BODY).hexdigest(), source="pool/p.deb")
    return fetch.fetch_all(store, [(a, "pkg 1", urls)], tmp_path / "dl", offline=False, log=lambda m: None,
                           file="layers/base/layer.toml", key="packages")


def test_a_transient_failure_is_tried_again(server, tmp_path):
    base, handler = server
    handler.plan = {"/a/pool/p.deb": [503, 502]}
    store = Store(tmp_path / "store")
    store._init()
    paths = _fetch(store, tmp_path, [f"{base}/a/pool/p.deb"])
    assert next(iter(paths.values())).read_bytes() == BODY
    assert handler.seen == ["/a/pool/p.deb"] * 3


def test_the_error_names_the_transient_failure_not_another_mirrors_404(server, tmp_path):
    base, handler = server
    handler.plan = {"/a/pool/p.deb": [503] * fetch.RETRIES, "/b/pool/p.deb": [404]}
    store = Store(tmp_path / "store")
    store._init()
    with pytest.raises(BuildError) as e:
        _fetch(store, tmp_path, [f"{base}/a/pool/p.deb", f"{base}/b/pool/p.deb"])
    assert f"{base}/a/pool/p.deb: HTTP 503" in str(e.value)
    # a 404 is final: that mirror was asked once
    assert handler.seen.count("/b/pool/p.deb") == 1
    assert not list((tmp_path / "store").rglob("*.part"))
