"""How a build shows itself: events (:mod:`.events`) rendered on a terminal, as plain lines, or
as JSON, and written to a log file per build (docs/progress.md).

- :class:`Reporter` is the `events` object a build is given: it turns the build's calls
  (`layer_start`, `compose_done`, `warn`...) into events and hands them, with those emitted deep
  in the builders, to one sink.
- :class:`Console` is that sink for the CLI: it writes every event to the build's log file
  (opened when the first thing worth logging happens: a no-op build writes none) and passes it
  to a renderer (:mod:`.render`): `tty`, `plain` or `json`. After a failure, :meth:`Console.notes`
  gives the lines printed under the error: the failing program's last output lines and the
  log's path.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from . import events as ev

MODES = ("auto", "tty", "plain", "json")
TAIL = 20  # lines of a failing program's output shown under the error
KEEP_LOGS = 30  # build logs kept per store (the oldest go when a new one is made)


def log_path(logs_dir: Path, template: str, when: float | None = None) -> Path:
    """Where the log of a build of `template` started at `when` goes: LOGS/TIME-TEMPLATE.log,
    LOGS being the store's `logs_dir()` (STORE/logs). The one place that decides the name."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when if when is not None else time.time()))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in template)
    return Path(logs_dir) / f"{stamp}-{safe}.log"


def choose(mode: str, stream: TextIO) -> str:
    """`auto`: `tty` on a terminal, else `plain`."""
    if mode == "auto":
        try:
            return "tty" if stream.isatty() and os.environ.get("TERM") != "dumb" else "plain"
        except (AttributeError, ValueError):
            return "plain"
    return mode


class Reporter:
    """The `events` object of :func:`lxclayer.build.build`: each call becomes an event for `sink`."""

    def __init__(self, sink: ev.Sink):
        self.sink = sink

    def emit(self, event: Any) -> None:
        if not event.time:
            event.time = time.time()
        self.sink(event)

    def layer_start(self, p) -> None:
        self.emit(ev.LayerStarted(layer=p.name, kind=p.kind, reasons=list(p.reasons)))

    def layer_done(self, p) -> None:
        self.emit(ev.LayerFinished(layer=p.name, kind=p.kind, state=p.state, output=p.output,
                                   seconds=round(p.seconds, 3), program_seconds=round(p.program_seconds, 3)))

    def log(self, layer: str, message: str) -> None:
        self.emit(ev.LayerStep(layer=layer, message=message))

    def compose_start(self, fmt: str, path: Path) -> None:
        self.emit(ev.ExportStarted(format=fmt, file=path.name))

    def compose_progress(self, fmt: str, chunks: int, reused: int) -> None:
        pass

    def export_progress(self, fmt: str, done: int, total: int, rate: float) -> None:
        self.emit(ev.ExportProgress(format=fmt, bytes_done=done, bytes_total=total, rate=round(rate)))

    def compose_done(self, info) -> None:
        self.emit(ev.ExportFinished(format=info.format, file=info.path.name, sha256=info.sha256, size=info.size,
                                    composed=info.composed, seconds=round(info.seconds, 3), parts=info.chunks,
                                    reused=info.reused, ahead=info.ahead))

    def warn(self, message: str) -> None:
        self.emit(ev.BuildWarning(message=message, layer=ev.layer()))

    def step(self, message: str) -> None:
        """A step of a command outside any layer (boot-test's phases)."""
        self.emit(ev.Step(message=message))


def sink_of(events: Any) -> ev.Sink:
    """The sink for what builders emit, for any `events` object: a :class:`Reporter`'s own, or,
    for an object with only the older methods, one that gives it each program's command line
    as a `log` message (`$ ARGV`), as before."""
    sink = getattr(events, "sink", None)
    if sink is not None:
        return sink
    import shlex

    def legacy(e: Any) -> None:
        if isinstance(e, ev.ProgramStarted) and e.layer:
            events.log(e.layer, "$ " + shlex.join(e.argv))

    return legacy


class LogFile:
    """Every event as a line of text, in a file made when the first one worth logging comes."""

    def __init__(self, path: Callable[[], Path] | Path):
        self._path = path
        self.path: Path | None = None
        self._f: TextIO | None = None
        self.failed = False

    def _open(self) -> TextIO | None:
        if self._f is None and not self.failed:
            try:
                p = self._path() if callable(self._path) else self._path
                p.parent.mkdir(parents=True, exist_ok=True)
                self._f = open(p, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
                self.path = p
                _prune(p.parent)
            except OSError:
                self.failed = True  # a log that cannot be written must not stop the build
        return self._f

    def write(self, event: Any) -> None:
        if self._f is None and _routine(event):
            return
        f = self._open()
        if f is None:
            return
        from .render import text

        line = text(event, verbose=True)
        if line is not None:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.time or time.time()))
            try:
                f.write(f"{stamp} {line.strip()}\n")
            except OSError:
                self.failed = True

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _routine(event: Any) -> bool:
    """What a no-op build emits: not a reason to start a log file."""
    return ((isinstance(event, ev.LayerFinished) and event.state == "cached")
            or (isinstance(event, ev.ExportFinished) and not event.composed))


def _prune(folder: Path) -> None:
    try:
        logs = sorted(folder.glob("*.log"))
        for old in logs[:-KEEP_LOGS]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


class Console:
    """The CLI's sink: the log file, a renderer, and what to say after a failure."""

    def __init__(self, mode: str = "auto", *, verbose: bool = False, log: Callable[[], Path] | Path | None = None,
                 stream: TextIO | None = None, quiet: bool = False):
        from . import render

        self.stream = stream or sys.stderr
        self.mode = choose(mode, self.stream)
        self.log = LogFile(log) if log is not None else None
        if self.mode == "json":
            self.renderer: render.Renderer = render.Json(self.stream, verbose=verbose)
        elif self.mode == "tty":
            self.renderer = render.Tty(self.stream, verbose=verbose)
        else:
            self.renderer = render.Plain(self.stream, verbose=verbose, quiet=quiet)
        self._lock = threading.Lock()
        self._running: dict[int, tuple[list[str], deque[str]]] = {}
        self.failed_program: tuple[list[str], int, list[str]] | None = None

    def __call__(self, event: Any) -> None:
        with self._lock:
            if not event.time:
                event.time = time.time()
            self._track(event)
            if self.log is not None:
                self.log.write(event)
            self.renderer.handle(event)

    def _track(self, e: Any) -> None:
        if isinstance(e, ev.ProgramStarted):
            self._running[e.program] = (e.argv, deque(maxlen=TAIL))
        elif isinstance(e, ev.ProgramOutput):
            run = self._running.get(e.program)
            if run is not None:
                run[1].append(e.line)
        elif isinstance(e, ev.ProgramFinished):
            argv, tail = self._running.pop(e.program, ([], deque()))
            self.failed_program = (argv, e.returncode, list(tail)) if e.returncode != 0 else None
        elif isinstance(e, ev.LayerFinished):
            self.failed_program = None

    def line(self, text: str) -> None:
        """A line of the command's own (not an event), printed above the live area."""
        with self._lock:
            self.renderer.message(text)

    def notes(self) -> list[str]:
        """What to print under a failure's one-line error when a program failed: its last lines
        and where the whole log is. Any other error stays one line."""
        out: list[str] = []
        if self.failed_program is None:
            return out
        argv, rc, tail = self.failed_program
        if tail:
            from .render import short_command

            out.append(f"last {len(tail)} lines of `{short_command(argv)}` (exit code {rc}):")
            out.extend(f"  | {ln}" for ln in tail)
        if self.log is not None and self.log.path is not None:
            out.append(f"full log: {self.log.path}")
        return out

    def close(self) -> None:
        with self._lock:
            self.renderer.close()
            if self.log is not None:
                self.log.close()


class Printer(Reporter):
    """A :class:`Reporter` over a :class:`Console` without a log file: what the commands that
    do not build (or do not choose a progress mode) print with."""

    def __init__(self, quiet: bool = False, mode: str = "auto", **kw: Any):
        self.console = Console("plain" if quiet else mode, quiet=quiet, **kw)
        super().__init__(self.console)

    def _line(self, text: str, *, always: bool = False) -> None:  # (older callers)
        self.console.line(text)

    def close(self) -> None:
        self.console.close()


__all__ = ["MODES", "Console", "LogFile", "Printer", "Reporter", "choose", "log_path", "sink_of"]
