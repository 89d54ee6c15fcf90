"""Running the checks: in parallel, each bounded, the whole bounded by a deadline.

- Every check runs in its own worker thread and gets the deadline as its own timeout.
- The answer is assembled when all checks are done or the deadline has passed, whichever is
  first; a check still running then is reported as failed ("no answer within ...").
- A check still running from an earlier request is not started again: the new request waits
  on the same run. So a hanging dependency never piles up threads or connections.
- Results younger than ``cache`` seconds are reused, so a burst of requests costs one run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

log = logging.getLogger(__name__)

OK = "ok"
FAIL = "fail"


class HealthMonitor:
    def __init__(
        self,
        service: str,
        checks: dict[str, Callable[[float], dict]],
        *,
        deadline: float = 2.5,
        cache: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.checks = dict(checks)
        self.deadline = deadline
        self.cache = cache
        self._clock = clock
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, len(self.checks)), thread_name_prefix="health"
        )
        self._lock = threading.Lock()
        self._running: dict[str, Future] = {}
        self._last: tuple[float, dict] | None = None
        self._previous_status: dict[str, str] = {}
        self._log_lock = threading.Lock()

    def _run_one(self, name: str, fn: Callable[[float], dict]) -> dict:
        start = self._clock()
        try:
            details = fn(self.deadline) or {}
            result = {"status": OK, **details}
        except Exception as e:  # noqa: BLE001 - any failure is a failed check
            msg = str(e) or type(e).__name__
            result = {"status": FAIL, "error": msg[:300]}
        result["latency_ms"] = round((self._clock() - start) * 1000, 1)
        return result

    def report(self) -> dict:
        """The /health body: {"status", "service", "checks": {name: {...}}, ["failing"]}."""
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last[0] < self.cache:
                return self._last[1]
            futures = {}
            for name, fn in self.checks.items():
                fut = self._running.get(name)
                if fut is None or fut.done():
                    fut = self._pool.submit(self._run_one, name, fn)
                    self._running[name] = fut
                futures[name] = fut
        wait(list(futures.values()), timeout=max(0.0, self.deadline - (self._clock() - now)))
        checks = {}
        for name, fut in futures.items():
            if fut.done():
                checks[name] = fut.result()
            else:
                checks[name] = {
                    "status": FAIL,
                    "error": f"no answer within {self.deadline:g} s",
                    "latency_ms": round(self.deadline * 1000, 1),
                }
        failing = sorted(n for n, r in checks.items() if r["status"] != OK)
        body = {
            "status": FAIL if failing else OK,
            "service": self.service,
            "checks": checks,
        }
        if failing:
            body["failing"] = failing
        self._log_changes(checks)
        with self._lock:
            self._last = (self._clock(), body)
        return body

    def _log_changes(self, checks: dict[str, dict]) -> None:
        with self._log_lock:
            self._log_changes_locked(checks)

    def _log_changes_locked(self, checks: dict[str, dict]) -> None:
        for name, result in checks.items():
            before = self._previous_status.get(name)
            now = result["status"]
            if now != before:
                if now == OK:
                    log.info("check %s: ok (%.1f ms)", name, result["latency_ms"])
                else:
                    log.warning("check %s: FAILED: %s", name, result.get("error"))
                self._previous_status[name] = now

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
