"""The dependency checks behind /health.

Each check is a function ``check(timeout) -> dict`` that raises on failure; the dict holds
details worth showing (never a secret). Each connects afresh with this service's credentials,
reading the password file at every call, so a check proves what the service itself needs:
the address is reachable, the credentials are accepted, the objects the service uses exist.
The client libraries are imported lazily: the health logic is testable without them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .config import Settings, read_secret

Check = Callable[[float], dict]


def postgresql_check(s: Settings) -> Check:
    def check(timeout: float) -> dict:
        import psycopg

        # libpq's connect_timeout has a floor of 2 s; the caller's deadline still holds.
        with psycopg.connect(
            host=s.pg_host,
            port=s.pg_port,
            dbname=s.pg_database,
            user=s.pg_user,
            password=read_secret(s.pg_password_file),
            connect_timeout=max(2, int(timeout + 0.999)),
            application_name=f"{s.service}-health",
            options=f"-c statement_timeout={int(timeout * 1000)}",
        ) as conn:
            row = conn.execute(
                "SELECT coalesce(max(version), 0) FROM public.schema_migrations"
            ).fetchone()
            conn.execute("SELECT 1 FROM event_store.events LIMIT 0")
        return {"schema_version": row[0] if row else 0}

    return check


def _cluster_info(raw) -> dict[str, str]:
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, bytes):
        raw = raw.decode()
    info = {}
    for line in str(raw).splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            info[key] = value
    return info


def redis_check(s: Settings) -> Check:
    def check(timeout: float) -> dict:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        password = read_secret(s.redis_password_file)
        per_node = max(0.2, timeout / max(1, len(s.redis_nodes)))
        for host, port in s.redis_nodes:
            where = f"{host}:{port}"
            client = redis.Redis(
                host=host,
                port=port,
                password=password,
                socket_connect_timeout=per_node,
                socket_timeout=per_node,
                # One try: a stopped node must fail this check at once (redis-py's
                # default retries with back-off for seconds).
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
            try:
                try:
                    client.ping()
                    info = _cluster_info(client.execute_command("CLUSTER", "INFO"))
                except redis.RedisError as e:
                    raise RuntimeError(f"node {where}: {e}") from None
            finally:
                client.close()
            state = info.get("cluster_state")
            if state != "ok":
                raise RuntimeError(f"node {where}: cluster_state is {state!r}")
            if info.get("cluster_slots_assigned") != "16384":
                raise RuntimeError(
                    f"node {where}: {info.get('cluster_slots_assigned')} of 16384 slots assigned"
                )
        return {
            "cluster_state": "ok",
            "nodes": len(s.redis_nodes),
            "cluster_size": int(info.get("cluster_size", 0) or 0),
        }

    return check


def rabbitmq_check(s: Settings) -> Check:
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # one line per failure is ours

    def check(timeout: float) -> dict:
        import pika

        params = pika.ConnectionParameters(
            host=s.amqp_host,
            port=s.amqp_port,
            virtual_host=s.amqp_vhost,
            credentials=pika.PlainCredentials(s.amqp_user, read_secret(s.amqp_password_file)),
            connection_attempts=1,
            retry_delay=0,
            socket_timeout=timeout,
            stack_timeout=timeout,
            blocked_connection_timeout=timeout,
            heartbeat=0,
            client_properties={"connection_name": f"{s.service}-health"},
        )
        try:
            conn = pika.BlockingConnection(params)
        except pika.exceptions.ProbableAuthenticationError:
            raise RuntimeError(f"{s.amqp_user}: authentication refused") from None
        except pika.exceptions.ProbableAccessDeniedError:
            raise RuntimeError(f"{s.amqp_user}: no access to vhost {s.amqp_vhost}") from None
        except pika.exceptions.AMQPConnectionError as e:
            raise RuntimeError(f"cannot connect to {s.amqp_host}:{s.amqp_port}: {e!r}") from None
        try:
            ch = conn.channel()
            ch.exchange_declare(s.amqp_exchange, exchange_type="topic", passive=True)
            q = ch.queue_declare(s.amqp_queue, passive=True)
            return {"queue": s.amqp_queue, "messages": q.method.message_count}
        except pika.exceptions.ChannelClosedByBroker as e:
            raise RuntimeError(f"{e.reply_text}") from None
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    return check


def default_checks(s: Settings) -> dict[str, Check]:
    return {
        "postgresql": postgresql_check(s),
        "redis": redis_check(s),
        "rabbitmq": rabbitmq_check(s),
    }
