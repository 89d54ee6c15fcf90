"""The HTTP server: stdlib ThreadingHTTPServer, JSON answers, systemd notification."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import __version__
from .health import OK, HealthMonitor

log = logging.getLogger(__name__)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) something; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError as e:
        log.debug("sd_notify failed: %s", e)


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Socket timeout per connection: a client that sends nothing does not hold a thread.
    request_timeout = 10.0

    def __init__(self, address: tuple[str, int], monitor: HealthMonitor) -> None:
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.monitor = monitor
        self.started = time.monotonic()
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # "::" serves IPv4 too.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class Handler(BaseHTTPRequestHandler):
    server: HealthServer
    server_version = f"stock-analysis-service/{__version__}"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)

    def _send(self, status: int, body: dict, head: bool = False) -> None:
        data = (json.dumps(body, separators=(",", ":")) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _route(self, head: bool) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        mon = self.server.monitor
        if path == "/health/live":
            self._send(200, {
                "status": OK,
                "service": mon.service,
                "uptime_s": round(time.monotonic() - self.server.started, 1),
            }, head)
        elif path in ("/health", "/health/ready"):
            body = mon.report()
            self._send(200 if body["status"] == OK else 503, body, head)
        else:
            self._send(404, {"status": "not found", "paths": ["/health", "/health/live", "/health/ready"]}, head)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._route(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)

    def _method_not_allowed(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _method_not_allowed  # noqa: N815

    def log_message(self, fmt: str, *args) -> None:  # access log only when debugging
        log.debug("%s %s", self.address_string(), fmt % args)


def make_server(bind: str, port: int, monitor: HealthMonitor) -> HealthServer:
    try:
        return HealthServer((bind, port), monitor)
    except OSError as e:
        if bind == "::":  # no IPv6 in this container: IPv4 only
            log.warning("cannot listen on [::]:%d (%s); listening on 0.0.0.0:%d", port, e, port)
            return HealthServer(("0.0.0.0", port), monitor)
        raise
