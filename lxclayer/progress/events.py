"""What a build tells whoever watches it: one stream of typed events through one sink.

Every event is a msgspec Struct tagged with its `event` name, so that the JSON renderer writes
it as it is (one object a line, documented in docs/progress.md) and tests compare them as
values. The library emits events two ways, both ending in the same sink:

- the build's own steps (a layer starts or ends, an exporter starts, advances, ends, a warning)
  through the `Events` object handed to :func:`lxclayer.build.build` (see
  :class:`lxclayer.progress.Reporter`, which turns those calls into events);
- what happens deep inside a builder (a program starts, prints a line, ends; a download or a
  registry transfer advances) through :func:`emit`, which sends to the sink the build routed to
  this thread with :func:`routed`. Code that starts worker threads passes :func:`bound` versions
  of its callbacks, so that their events reach the same sink, attributed to the same layer.

Nothing here imports more than msgspec: a no-op build stays fast.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import shlex
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import msgspec

SCHEMA = 1  # bumped when an event loses or changes a field (adding one does not)


class _Event(msgspec.Struct, tag_field="event", kw_only=True, omit_defaults=False):
    time: float = 0.0  # seconds since the epoch, when emitted


class LayerStarted(_Event, tag="layer-started"):
    """A layer is being built (or pulled from a shared cache) because the store lacks it."""

    layer: str
    kind: str
    reasons: list[str] = []


class LayerFinished(_Event, tag="layer-finished"):
    layer: str
    kind: str
    state: Literal["built", "cached", "pulled"]
    output: str | None = None
    seconds: float = 0.0
    program_seconds: float = 0.0


class LayerStep(_Event, tag="layer-step"):
    """What a layer's builder is doing now (resolving pins, downloading, installing...)."""

    layer: str
    message: str


class ProgramStarted(_Event, tag="program-started"):
    layer: str | None
    program: int  # numbers the programs of one process, to match their lines and end
    argv: list[str]


class ProgramOutput(_Event, tag="program-output"):
    layer: str | None
    program: int
    line: str


class ProgramFinished(_Event, tag="program-finished"):
    layer: str | None
    program: int
    returncode: int
    seconds: float


class DownloadProgress(_Event, tag="download-progress"):
    layer: str | None
    what: str  # "packages", "wheels", "tools", a URL...
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    rate: float  # bytes per second since the download started
    done: bool = False


class ExportStarted(_Event, tag="export-started"):
    format: str
    file: str


class ExportProgress(_Event, tag="export-progress"):
    format: str
    bytes_done: int  # of the uncompressed stream
    bytes_total: int
    rate: float


class ExportFinished(_Event, tag="export-finished"):
    format: str
    file: str
    sha256: str
    size: int
    composed: bool  # False: the file in place was already this output
    seconds: float = 0.0
    parts: int = 0  # chunks (tar.gz, tar.zst) or layer blobs (oci)
    reused: int = 0  # parts found made by an earlier build
    ahead: int = 0  # parts made by this build while the layers above them built


class TransferProgress(_Event, tag="transfer-progress"):
    """A blob going to or coming from a registry (the shared cache, `push`)."""

    direction: Literal["push", "pull"]
    registry: str
    digest: str
    bytes_done: int
    bytes_total: int
    rate: float
    done: bool = False


class BuildWarning(_Event, tag="warning"):
    message: str
    layer: str | None = None


class Step(_Event, tag="step"):
    """A step of a command outside any layer: boot-test's phases (`unpacking`, `booting`...)."""

    message: str


Event = (LayerStarted | LayerFinished | LayerStep | ProgramStarted | ProgramOutput | ProgramFinished
         | DownloadProgress | ExportStarted | ExportProgress | ExportFinished | TransferProgress | BuildWarning | Step)
Sink = Callable[[Any], None]

_sink: contextvars.ContextVar[Sink | None] = contextvars.ContextVar("lxclayer_progress_sink", default=None)
_layer: contextvars.ContextVar[str | None] = contextvars.ContextVar("lxclayer_progress_layer", default=None)
_programs = itertools.count(1)


def emit(event: Any) -> None:
    """Send `event` to this thread's sink (nothing when no build routed one here)."""
    sink = _sink.get()
    if sink is not None:
        if not event.time:
            event.time = time.time()
        sink(event)


def active() -> bool:
    return _sink.get() is not None


def layer() -> str | None:
    """The layer being built in this thread, as :func:`routed` said."""
    return _layer.get()


def next_program() -> int:
    return next(_programs)


@contextlib.contextmanager
def routed(sink: Sink | None, layer: str | None = None) -> Iterator[None]:
    """While inside, :func:`emit` in this thread sends to `sink`, for `layer`."""
    t1 = _sink.set(sink)
    t2 = _layer.set(layer)
    try:
        yield
    finally:
        _layer.reset(t2)
        _sink.reset(t1)


def bound(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, to be run in another thread with this thread's sink and layer."""
    sink, lay = _sink.get(), _layer.get()
    if sink is None:
        return fn

    def run(*a: Any, **kw: Any) -> Any:
        with routed(sink, lay):
            return fn(*a, **kw)

    return run


class Rate:
    """Bytes done of a total, and when to say so again: at most every `every` seconds (and at
    the end), so that a fast download does not flood the sink."""

    def __init__(self, total: int, every: float = 0.1):
        self.total = total
        self.done = 0
        self.t0 = time.monotonic()
        self.every = every
        self._last = 0.0

    def add(self, n: int) -> bool:
        """Count `n` more bytes; True when it is time to report."""
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            return True
        return False

    @property
    def rate(self) -> float:
        dt = time.monotonic() - self.t0
        return self.done / dt if dt > 0 else 0.0


class Program:
    """One program run for a build: its start (argv), its output lines and its end as events.
    Without a routed sink, its command line goes to `log` as `$ ARGV`, as it always did."""

    def __init__(self, argv: list[str], log: Callable[[str], None] | None = None):
        self.id = next(_programs)
        self.t0 = time.monotonic()
        self.active = active()
        if self.active:
            emit(ProgramStarted(layer=layer(), program=self.id, argv=[str(a) for a in argv]))
        elif log is not None:
            log("$ " + shlex.join(str(a) for a in argv))

    def line(self, text: str) -> None:
        if self.active:
            emit(ProgramOutput(layer=layer(), program=self.id, line=text))

    def lines(self, text: str) -> None:
        if self.active:
            for ln in text.splitlines():
                self.line(ln)

    def finished(self, returncode: int) -> None:
        if self.active:
            emit(ProgramFinished(layer=layer(), program=self.id, returncode=returncode,
                                 seconds=round(time.monotonic() - self.t0, 3)))


encoder = msgspec.json.Encoder()


def to_json(event: Any) -> bytes:
    return encoder.encode(event)
