"""python -m stock_analysis_service [--check]

Serve the health endpoints of the service named by SA_SERVICE on SA_PORT, or with
``--check`` run the checks once, print the /health body and exit 0 (ok) or 1.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading

from .checks import default_checks
from .config import Settings
from .health import OK, HealthMonitor
from .server import make_server, sd_notify


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=os.environ.get("SA_LOG_LEVEL", "INFO").upper(),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("stock_analysis_service")
    try:
        settings = Settings.from_env()
    except ValueError as e:
        log.error("configuration: %s", e)
        return 2
    monitor = HealthMonitor(
        settings.service,
        default_checks(settings),
        deadline=settings.health_deadline,
        cache=settings.health_cache,
    )
    if "--check" in argv:
        body = monitor.report()
        print(json.dumps(body, indent=2))
        return 0 if body["status"] == OK else 1

    server = make_server(settings.bind, settings.port, monitor)
    host, port = server.server_address[:2]
    log.info("%s listening on [%s]:%d (/health, /health/live, /health/ready)", settings.service, host, port)

    def stop(signum, frame):  # noqa: ARG001
        sd_notify("STOPPING=1")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sd_notify(f"READY=1\nSTATUS=serving {settings.service} health on port {port}")
    # Log the first verdict (and from then on every change) without waiting for a poll.
    threading.Thread(target=monitor.report, daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        monitor.close()
    log.info("%s stopped", settings.service)
    return 0


if __name__ == "__main__":
    sys.exit(main())
