"""One way to run a test's HTTP server on loopback (a free port, a thread, stopped by the test)."""

from __future__ import annotations

import http.server
import threading


def start(handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.ThreadingHTTPServer:
    """`handler` served on 127.0.0.1 at a free port (`server_address[1]`), in a daemon thread;
    end it with :func:`stop`."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server: http.server.ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()
