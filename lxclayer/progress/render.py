"""Renderers: events as a live terminal view (`tty`), as plain lines (`plain`), or as JSON
lines (`json`). docs/progress.md shows each. Plain ANSI escape sequences, no library: see
docs/dependencies.md."""

from __future__ import annotations

import shlex
import shutil
import threading
import time
from typing import Any, TextIO

from . import events as ev


def size(n: float) -> str:
    """Bytes for a person, in decimal units as docs/progress.md shows them: `512 B`, `59.2 MB`
    (the one formatter of sizes in what a command prints, progress and results alike)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def short_command(argv: list[str], width: int = 72) -> str:
    """A command line cut to `width` characters (an apt-get install names dozens of files)."""
    if len(argv) > 2 and argv[0].rsplit("/", 1)[-1] == "chroot":
        argv = argv[2:]  # the program run in the chroot says more than the chroot's path
    if not argv:
        return "?"
    words = [argv[0].rsplit("/", 1)[-1], *argv[1:]]
    s = shlex.join(words)
    return s if len(s) <= width else s[:width - 1] + "…"


def layer_line(e: ev.LayerFinished) -> str:
    """A finished layer, on one line: `built redis in 3.8s (programs 2.4s)`, `cached redis`."""
    if e.state == "built":
        progs = f" (programs {e.program_seconds:.1f}s)" if e.program_seconds else ""
        return f"built {e.layer} in {e.seconds:.1f}s{progs}"
    if e.state == "pulled":
        return f"pulled {e.layer} in {e.seconds:.1f}s"
    return f"cached {e.layer}"


def export_line(e: ev.ExportFinished) -> str:
    if not e.composed:
        return f"up to date {e.file}"
    what = "layer blobs" if e.format == "oci" else "chunks"
    ahead = f", {e.ahead} made while the layers built" if e.ahead else ""
    return f"composed {e.file} in {e.seconds:.1f}s ({e.reused} of {e.parts} {what} reused{ahead})"


def text(e: Any, *, verbose: bool) -> str | None:
    """An event as the `plain` renderer (and the log file, with `verbose`) prints it; None for
    one it does not print."""
    if isinstance(e, ev.LayerStarted):
        why = f" ({'; '.join(e.reasons)})" if e.reasons else ""
        return f"  building {e.layer} [{e.kind}]{why}"
    if isinstance(e, ev.LayerFinished):
        out = (e.output or "")[:12]
        if e.state == "built":
            progs = f" (programs {e.program_seconds:.1f}s)" if e.program_seconds else ""
            return f"  built    {e.layer} in {e.seconds:.1f}s{progs}  {out}"
        if e.state == "pulled":
            return f"  pulled   {e.layer} from the cache in {e.seconds:.1f}s  {out}"
        return f"  cached   {e.layer}  {out}"
    if isinstance(e, ev.LayerStep):
        return f"    {e.layer}: {e.message}"
    if isinstance(e, ev.ProgramStarted):
        return f"    {e.layer or '-'}: $ {shlex.join(e.argv)}" if verbose else None
    if isinstance(e, ev.ProgramOutput):
        return f"    {e.layer or '-'}| {e.line}" if verbose else None
    if isinstance(e, ev.ProgramFinished):
        if e.returncode != 0 or verbose:
            return f"    {e.layer or '-'}: program {e.program} exited with {e.returncode} after {e.seconds:.1f}s"
        return None
    if isinstance(e, ev.DownloadProgress):
        if not e.done:
            return None
        secs = e.bytes_done / e.rate if e.rate else 0.0
        return (f"    {e.layer or '-'}: downloaded {e.files_done} {e.what} ({size(e.bytes_done)}) in {secs:.1f}s"
                f" ({size(e.rate)}/s)")
    if isinstance(e, ev.ExportStarted):
        return f"  composing {e.file}"
    if isinstance(e, ev.ExportFinished):
        return "  " + export_line(e)
    if isinstance(e, ev.TransferProgress):
        if not e.done:
            return None
        verb = "pushed" if e.direction == "push" else "pulled"
        return f"  {verb} blob {e.digest[:19]} ({size(e.bytes_done)}, {size(e.rate)}/s) {e.registry}"
    if isinstance(e, ev.BuildWarning):
        return f"  warning: {e.message}"
    if isinstance(e, ev.Step):
        return f"  {e.message}"
    return None


class Renderer:
    def handle(self, event: Any) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class Plain(Renderer):
    """One line per event that matters, no control characters (CI logs). Long downloads and
    exports say how far they are every PROGRESS_EVERY seconds."""

    PROGRESS_EVERY = 10.0

    def __init__(self, stream: TextIO, *, verbose: bool = False, quiet: bool = False):
        self.stream = stream
        self.verbose = verbose
        self.quiet = quiet
        self._said: dict[tuple, float] = {}

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def handle(self, e: Any) -> None:
        if self.quiet:
            if isinstance(e, ev.BuildWarning):  # a warning is never silent (stdout holds --json's report)
                self._write(f"  warning: {e.message}")
            return
        if isinstance(e, (ev.DownloadProgress, ev.ExportProgress)) and not getattr(e, "done", False):
            key = (type(e), getattr(e, "layer", None), getattr(e, "format", None))
            now = time.monotonic()
            first = self._said.setdefault(key, now)
            if now - first >= self.PROGRESS_EVERY:
                self._said[key] = now
                who = f"    {e.layer or '-'}: downloading" if isinstance(e, ev.DownloadProgress) else f"  composing {e.format}:"
                pct = 100 * e.bytes_done // e.bytes_total if e.bytes_total else 0
                self._write(f"{who} {pct}% ({size(e.bytes_done)} of {size(e.bytes_total)}, {size(e.rate)}/s)")
            return
        line = text(e, verbose=self.verbose)
        if line is not None:
            self._write(line)

    def message(self, text_: str) -> None:
        if not self.quiet:
            self._write(text_)


class Json(Renderer):
    """One JSON object per event per line; program output lines only with `-v`."""

    def __init__(self, stream: TextIO, *, verbose: bool = False):
        self.stream = stream
        self.verbose = verbose

    def handle(self, e: Any) -> None:
        if isinstance(e, ev.ProgramOutput) and not self.verbose:
            return
        self.stream.write(ev.to_json(e).decode() + "\n")
        self.stream.flush()

    def message(self, text_: str) -> None:
        pass


SPIN = "|/-\\"


def bar(done: int, total: int, width: int = 24) -> str:
    frac = min(1.0, done / total) if total else 0.0
    full = int(frac * width)
    return "[" + "#" * full + "." * (width - full) + "]"


class Tty(Renderer):
    """A live area at the bottom of the terminal, redrawn ten times a second: one line per
    running layer (elapsed time, what it waits for), a bar per download, export and registry
    transfer. Finished layers and exports scroll above it, one line each. Program command lines
    and output only with `-v` (they are in the log file)."""

    def __init__(self, stream: TextIO, *, verbose: bool = False):
        self.stream = stream
        self.verbose = verbose
        self._lock = threading.RLock()
        self._drawn = 0  # lines of the live area on screen
        self.layers: dict[str, list] = {}  # name -> [t0, step]
        self.bars: dict[tuple, list] = {}  # key -> [label, done, total, rate, t0]
        self._frame = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- drawing ------------------------------------------------------------------------------

    def _width(self) -> int:
        return max(20, shutil.get_terminal_size((80, 24)).columns - 1)

    def _live(self) -> list[str]:
        now = time.monotonic()
        w = self._width()
        spin = SPIN[self._frame % len(SPIN)]
        out = []
        for name, (t0, step) in self.layers.items():
            s = f"{spin} building {name}  {now - t0:5.1f}s" + (f"  {step}" if step else "")
            out.append(s)
        for label, done, total, rate, t0 in self.bars.values():
            amount = f"{size(done)}/{size(total)}" if total else size(done)
            out.append(f"  {label} {bar(done, total)} {amount}  {size(rate)}/s  {now - t0:4.0f}s")
        return [s[:w] for s in out]

    def _clear(self) -> str:
        if not self._drawn:
            return "\r"
        return "\r" + (f"\033[{self._drawn - 1}A" if self._drawn > 1 else "") + "\033[J"

    def _draw(self, above: list[str] = ()) -> None:  # type: ignore[assignment]
        with self._lock:
            live = self._live()
            buf = self._clear()
            for line in above:
                buf += line + "\n"
            buf += "\n".join(live)
            self._drawn = len(live)
            self.stream.write(buf)
            self.stream.flush()
            self._ticking(bool(live))

    def _ticking(self, on: bool) -> None:
        if on and self._thread is None:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._tick, args=(self._stop,), name="lxclayer-progress",
                                            daemon=True)
            self._thread.start()
        elif not on and self._thread is not None:
            self._stop.set()
            self._thread = None

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(0.1):
            with self._lock:
                if stop.is_set():
                    return
                self._frame += 1
                self._draw()

    def above(self, line: str) -> None:
        self._draw([line])

    # --- events -------------------------------------------------------------------------------

    def handle(self, e: Any) -> None:
        with self._lock:
            self._handle(e)

    def _handle(self, e: Any) -> None:
        now = time.monotonic()
        if isinstance(e, ev.LayerStarted):
            self.layers[e.layer] = [now, ""]
            self._draw()
        elif isinstance(e, ev.LayerFinished):
            self.layers.pop(e.layer, None)
            for k in [k for k in self.bars if k[1] == e.layer]:
                del self.bars[k]
            self.above(layer_line(e))
        elif isinstance(e, ev.LayerStep):
            if self.verbose:
                self.above(f"  {e.layer}: {e.message}")
            if e.layer in self.layers:
                self.layers[e.layer][1] = e.message
        elif isinstance(e, ev.ProgramStarted):
            if e.layer in self.layers:
                self.layers[e.layer][1] = f"running {short_command(e.argv, 40)}"
            if self.verbose:
                self.above(f"  {e.layer or '-'}: $ {shlex.join(e.argv)}")
        elif isinstance(e, ev.ProgramOutput):
            if self.verbose:
                self.above(f"  {e.layer or '-'}| {e.line}")
        elif isinstance(e, ev.ProgramFinished):
            if e.layer in self.layers:
                self.layers[e.layer][1] = ""  # (the layer goes on: normalising, storing)
            if self.verbose:
                self.above(f"  {e.layer or '-'}: exit code {e.returncode} after {e.seconds:.1f}s")
        elif isinstance(e, ev.DownloadProgress):
            key = ("download", e.layer, e.what)
            if e.done:
                self.bars.pop(key, None)
                self.above(text(e, verbose=False).strip())  # type: ignore[union-attr]
            else:
                label = f"{e.layer}: {e.files_done}/{e.files_total} {e.what}"
                t0 = self.bars.get(key, [None, 0, 0, 0, now])[4]
                self.bars[key] = [label, e.bytes_done, e.bytes_total, e.rate, t0]
        elif isinstance(e, ev.ExportStarted):
            self.bars[("export", None, e.format)] = [f"composing {e.file}", 0, 0, 0, now]
            self._draw()
        elif isinstance(e, ev.ExportProgress):
            b = self.bars.get(("export", None, e.format))
            if b is not None:
                b[1:4] = [e.bytes_done, e.bytes_total, e.rate]
        elif isinstance(e, ev.ExportFinished):
            self.bars.pop(("export", None, e.format), None)
            self.above(export_line(e))
        elif isinstance(e, ev.TransferProgress):
            key = ("transfer", None, e.digest)
            if e.done:
                self.bars.pop(key, None)
                self._draw()
            else:
                t0 = self.bars.get(key, [None, 0, 0, 0, now])[4]
                self.bars[key] = [f"{e.direction} {e.digest[7:19]}", e.bytes_done, e.bytes_total, e.rate, t0]
        elif isinstance(e, ev.BuildWarning):
            self.above(f"warning: {e.message}")
        elif isinstance(e, ev.Step):
            self.above(e.message)

    def message(self, text_: str) -> None:
        self.above(text_)

    def close(self) -> None:
        with self._lock:
            self.layers.clear()
            self.bars.clear()
            self._draw()
            self._ticking(False)
