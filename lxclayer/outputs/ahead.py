"""Exports started while the stack still builds.

A build realises its layers one after the other; most of that time one core runs dpkg or a
script and the other waits. Work of an export that depends only on the layers built so far
(an image's layer blobs: `Exporter.ahead`) runs meanwhile, in one background thread, so that
the export at the end finds it done. Nothing here changes a byte of any output: the jobs keep
what they make in the store under the keys `export` looks up, and a job that fails or is
cancelled leaves its work to `export`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from ..progress import events as progress_events
from ..store import LayerEntry, Store
from . import exporter
from .base import Ahead, Cancelled, Job


class Runner:
    """The formats' work ahead for one build: `layer` after each layer is realised, `finish`
    before the exports (waits for the jobs), and closed when the build ends, however it ends
    (jobs not started are dropped, a running one stops at its next check)."""

    def __init__(self, aheads: dict[str, Ahead]):
        self.aheads = aheads
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[tuple[str, Future]] = []

    def layer(self, entry: LayerEntry, fresh: bool) -> None:
        for fmt, ahead in self.aheads.items():
            job = ahead.layer(entry, fresh)
            if job is None:
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lxclayer-ahead")
            self._futures.append((fmt, self._pool.submit(progress_events.bound(self._run), job)))

    def _run(self, job: Job) -> None:
        # A failure here is not reported: `export` does the same work again, in the build's
        # own thread, and reports it there (with the build's healing of a damaged store).
        with contextlib.suppress(Cancelled, Exception):
            job(self._stop)

    def ahead(self, fmt: str) -> Ahead | None:
        return self.aheads.get(fmt)

    def finish(self, fmt: str) -> None:
        """Wait for the jobs of `fmt` (each ends by itself: failures are swallowed); its export
        runs after them and finds their work done."""
        for f in [f for f_fmt, f in self._futures if f_fmt == fmt]:
            f.result()

    def close(self) -> None:
        self._stop.set()
        for _, f in self._futures:
            f.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._futures.clear()


@contextlib.contextmanager
def running(store: Store, formats: list[str], mtime: int) -> Iterator[Runner]:
    """A Runner for `formats` (only those with work ahead), closed on the way out."""
    aheads = {}
    for fmt in formats:
        ahead = exporter(fmt).ahead(store, mtime)
        if ahead is not None:
            aheads[fmt] = ahead
    runner = Runner(aheads)
    try:
        yield runner
    finally:
        runner.close()
