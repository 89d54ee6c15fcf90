import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from stock_analysis_service.checks import _cluster_info
from stock_analysis_service.config import Settings, read_secret
from stock_analysis_service.health import HealthMonitor
from stock_analysis_service.server import make_server


def ok(details=None):
    return lambda timeout: dict(details or {})


def boom(msg):
    def check(timeout):
        raise RuntimeError(msg)
    return check


def hang(event: threading.Event, calls: list):
    def check(timeout):
        calls.append(time.monotonic())
        event.wait(10)
        return {}
    return check


def test_all_ok_reports_each_check_with_latency():
    mon = HealthMonitor("svc", {"postgresql": ok({"schema_version": 2}), "redis": ok(), "rabbitmq": ok()}, cache=0)
    body = mon.report()
    assert body["status"] == "ok" and body["service"] == "svc"
    assert set(body["checks"]) == {"postgresql", "redis", "rabbitmq"}
    assert body["checks"]["postgresql"]["schema_version"] == 2
    assert all(c["status"] == "ok" and c["latency_ms"] >= 0 for c in body["checks"].values())
    assert "failing" not in body


def test_a_failing_check_is_named():
    mon = HealthMonitor("svc", {"postgresql": ok(), "redis": boom("node 127.0.0.1:6380: Connection refused"), "rabbitmq": ok()}, cache=0)
    body = mon.report()
    assert body["status"] == "fail"
    assert body["failing"] == ["redis"]
    assert "6380" in body["checks"]["redis"]["error"]
    assert body["checks"]["postgresql"]["status"] == "ok"


def test_a_hanging_check_is_bounded_by_the_deadline_and_not_started_twice():
    release, calls = threading.Event(), []
    mon = HealthMonitor("svc", {"redis": hang(release, calls), "postgresql": ok()}, deadline=0.3, cache=0)
    try:
        t0 = time.monotonic()
        body = mon.report()
        assert time.monotonic() - t0 < 1.0
        assert body["failing"] == ["redis"] and "no answer" in body["checks"]["redis"]["error"]
        body = mon.report()  # still hanging: waits on the same run
        assert body["failing"] == ["redis"]
        assert len(calls) == 1
    finally:
        release.set()
    time.sleep(0.05)
    assert mon.report()["status"] == "ok"
    assert len(calls) == 2
    mon.close()


def test_checks_run_in_parallel():
    def slow(timeout):
        time.sleep(0.3)
        return {}
    mon = HealthMonitor("svc", {"a": slow, "b": slow, "c": slow}, deadline=2.0, cache=0)
    t0 = time.monotonic()
    assert mon.report()["status"] == "ok"
    assert time.monotonic() - t0 < 0.8


def test_results_are_cached_briefly():
    calls = []
    def counted(timeout):
        calls.append(1)
        return {}
    mon = HealthMonitor("svc", {"a": counted}, cache=10)
    mon.report()
    mon.report()
    assert len(calls) == 1


@pytest.fixture
def server():
    release, calls = threading.Event(), []
    checks = {"postgresql": ok(), "redis": ok(), "rabbitmq": ok()}
    mon = HealthMonitor("broker-gateway", checks, deadline=0.5, cache=0)
    srv = make_server("127.0.0.1", 0, mon)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield base, mon.checks, release, calls
    release.set()
    srv.shutdown()
    srv.server_close()
    mon.close()


def get(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_http_health_200_then_503_naming_the_check(server):
    base, checks, release, calls = server
    status, headers, body = get(base + "/health")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == "ok"
    checks["rabbitmq"] = boom("authentication refused")
    status, _, body = get(base + "/health")
    data = json.loads(body)
    assert status == 503 and data["failing"] == ["rabbitmq"]
    status, _, body = get(base + "/health/ready")
    assert status == 503
    status, _, body = get(base + "/health/live")
    assert status == 200 and json.loads(body)["service"] == "broker-gateway"


def test_http_health_answers_within_3_s_when_a_check_hangs(server):
    base, checks, release, calls = server
    checks["postgresql"] = hang(release, calls)
    t0 = time.monotonic()
    status, _, body = get(base + "/health")
    assert time.monotonic() - t0 < 3.0
    assert status == 503 and json.loads(body)["failing"] == ["postgresql"]


def test_http_other_paths_and_methods(server):
    base = server[0]
    assert get(base + "/nope")[0] == 404
    assert get(base + "/health", method="POST")[0] == 405
    status, headers, body = get(base + "/health", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_settings_from_env():
    s = Settings.from_env({"SA_SERVICE": "event-bus", "SA_PORT": "8003",
                           "SA_REDIS_NODES": "127.0.0.1:6379, 127.0.0.1:6380,[::1]:6381",
                           "SA_HEALTH_DEADLINE": "9"})
    assert s.port == 8003 and s.amqp_queue == "event-bus-events"
    assert s.redis_nodes == [("127.0.0.1", 6379), ("127.0.0.1", 6380), ("::1", 6381)]
    assert s.health_deadline <= 2.8  # never slower than 3 s
    with pytest.raises(ValueError):
        Settings.from_env({"SA_PORT": "8003"})
    with pytest.raises(ValueError):
        Settings.from_env({"SA_SERVICE": "x", "SA_PORT": "80000"})


def test_read_secret_strips_and_refuses_empty(tmp_path):
    f = tmp_path / "s"
    f.write_text("abc123\n")
    assert read_secret(str(f)) == "abc123"
    f.write_text("\n")
    with pytest.raises(ValueError):
        read_secret(str(f))


def test_cluster_info_parsing():
    raw = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_size:3\r\n"
    info = _cluster_info(raw)
    assert info["cluster_state"] == "ok" and info["cluster_size"] == "3"
    assert _cluster_info(raw.encode())["cluster_slots_assigned"] == "16384"
    assert _cluster_info({"cluster_state": "fail"})["cluster_state"] == "fail"
