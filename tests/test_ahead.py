"""Work ahead (lxclayer/outputs/ahead.py): jobs run beside the build, end with it, and never fail it."""

from __future__ import annotations

import threading
import time

from lxclayer.outputs.ahead import Runner
from lxclayer.outputs.base import Ahead, Cancelled


class _Jobs(Ahead):
    def __init__(self, job):
        self.job = job
        self.told: list[tuple[str, bool]] = []

    def layer(self, entry, fresh):
        self.told.append((entry, fresh))
        return self.job if fresh else None


def test_a_build_that_ends_first_stops_the_job_running_and_drops_the_rest():
    seen: list[str] = []
    started = threading.Event()

    def job(stop: threading.Event) -> None:
        started.set()
        while not stop.wait(0.01):
            pass
        seen.append("stopped")
        raise Cancelled

    jobs = _Jobs(job)
    runner = Runner({"oci": jobs})
    runner.layer("a", True)
    runner.layer("b", False)
    runner.layer("c", True)  # queued behind the first: never started
    assert started.wait(5)
    t = time.monotonic()
    runner.close()
    assert time.monotonic() - t < 2
    assert seen == ["stopped"]
    assert jobs.told == [("a", True), ("b", False), ("c", True)]


def test_a_job_that_fails_leaves_its_work_to_the_export():
    done: list[str] = []

    def job(stop: threading.Event) -> None:
        done.append("ran")
        raise OSError(28, "No space left on device")

    runner = Runner({"oci": _Jobs(job)})
    runner.layer("a", True)
    runner.finish("oci")  # returns: the failure is the export's to meet and report
    runner.finish("tar.gz")  # a format with no work ahead has nothing to wait for
    runner.close()
    assert done == ["ran"]
