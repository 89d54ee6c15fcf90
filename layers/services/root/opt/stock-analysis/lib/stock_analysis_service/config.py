"""Settings from the environment (the unit's EnvironmentFile= lines)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def _nodes(raw: str) -> list[tuple[str, int]]:
    nodes = []
    for item in raw.replace(",", " ").split():
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"SA_REDIS_NODES: {item!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    if not nodes:
        raise ValueError("SA_REDIS_NODES is empty")
    return nodes


@dataclass(frozen=True)
class Settings:
    service: str
    port: int
    bind: str = "::"
    # Whole /health answer within this many seconds (checks run in parallel).
    health_deadline: float = 2.5
    # Concurrent /health requests within this window share one result.
    health_cache: float = 1.0

    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_database: str = "stock_analysis_event_store"
    pg_user: str = "stock_analysis_user"
    pg_password_file: str = "/etc/stock-analysis/secrets/postgresql.password"

    redis_nodes: list[tuple[str, int]] = field(
        default_factory=lambda: [("127.0.0.1", 6379), ("127.0.0.1", 6380), ("127.0.0.1", 6381)]
    )
    redis_password_file: str = "/etc/stock-analysis/secrets/redis.password"

    amqp_host: str = "127.0.0.1"
    amqp_port: int = 5672
    amqp_vhost: str = "/stock-analysis"
    amqp_user: str = "stock-analysis"
    amqp_password_file: str = "/etc/stock-analysis/secrets/rabbitmq.password"
    amqp_exchange: str = "stock-analysis-events"

    @property
    def amqp_queue(self) -> str:
        return f"{self.service}-events"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        service = env.get("SA_SERVICE", "").strip()
        if not service:
            raise ValueError("SA_SERVICE is not set (the unit's /etc/stock-analysis/<service>.env)")
        port = _int(env, "SA_PORT", 0)
        if not 0 < port < 65536:
            raise ValueError("SA_PORT is not set to a TCP port")
        d = cls.__dataclass_fields__  # defaults
        return cls(
            service=service,
            port=port,
            bind=env.get("SA_BIND", "").strip() or d["bind"].default,
            health_deadline=min(_float(env, "SA_HEALTH_DEADLINE", 2.5), 2.8),
            health_cache=_float(env, "SA_HEALTH_CACHE", 1.0),
            pg_host=env.get("SA_PG_HOST") or d["pg_host"].default,
            pg_port=_int(env, "SA_PG_PORT", 5432),
            pg_database=env.get("SA_PG_DATABASE") or d["pg_database"].default,
            pg_user=env.get("SA_PG_USER") or d["pg_user"].default,
            pg_password_file=env.get("SA_PG_PASSWORD_FILE") or d["pg_password_file"].default,
            redis_nodes=_nodes(env["SA_REDIS_NODES"]) if env.get("SA_REDIS_NODES") else
            d["redis_nodes"].default_factory(),
            redis_password_file=env.get("SA_REDIS_PASSWORD_FILE") or d["redis_password_file"].default,
            amqp_host=env.get("SA_AMQP_HOST") or d["amqp_host"].default,
            amqp_port=_int(env, "SA_AMQP_PORT", 5672),
            amqp_vhost=env.get("SA_AMQP_VHOST") or d["amqp_vhost"].default,
            amqp_user=env.get("SA_AMQP_USER") or d["amqp_user"].default,
            amqp_password_file=env.get("SA_AMQP_PASSWORD_FILE") or d["amqp_password_file"].default,
            amqp_exchange=env.get("SA_AMQP_EXCHANGE") or d["amqp_exchange"].default,
        )


def read_secret(path: str) -> str:
    """A secret file's content without surrounding white space. Read at every check, so a
    rotated secret is used without a restart."""
    with open(path, encoding="utf-8") as f:
        value = f.read().strip()
    if not value:
        raise ValueError(f"{path} is empty")
    return value
