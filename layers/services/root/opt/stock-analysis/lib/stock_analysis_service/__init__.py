"""stock_analysis_service: the code every stock-analysis service shares.

An HTTP server (stdlib, threads) answering the health endpoints of one service:

- ``/health``       200 when PostgreSQL, the Redis cluster and RabbitMQ answer with this
                    service's credentials, 503 naming the failing check otherwise; JSON
                    with a status and latency per check; answers within 3 s whatever hangs.
- ``/health/ready`` the same verdict (a load balancer's readiness probe).
- ``/health/live``  200 as long as the process serves requests (no dependency checked).

Configuration comes from the environment (``/etc/stock-analysis/*.env``), see
:mod:`stock_analysis_service.config`. Run as ``python -m stock_analysis_service``.
"""

__version__ = "1.0.0"
