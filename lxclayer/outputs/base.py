"""The exporter interface: one output format of a template.

An exporter turns a built stack into a file in the output folder. It is given the per-layer
store entries in stack order (an OCI image keeps the layers; a tarball merges them), the merged
tree (made on first use), the template, the store and the output folder; it owns:

- its file name (`filename`), and where its bytes come from (`compressor`: the identity of
  every tool that shapes them, recorded in the lock so that a changed compressor explains a
  changed sha256);
- `export`: write the file atomically (or keep the one already there when it is provably the
  same) and say what it is (`ArchiveInfo`); the lock records its name, sha256 and size;
- `keep`: what of the store gc must keep so that a no-op build of a locked stack stays cheap;
- `check`: whether a file of this format follows the rules its consumer relies on;
- `ahead` (optional): the part of `export` that depends only on the layers built so far, to
  run in the background while the layers above them build (an image's layer blobs).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..check import Violation
    from ..definitions import Template
    from ..lock.model import Lockfile
    from ..manifest import Entry
    from ..store import Keep, LayerEntry, Store


@dataclass
class ArchiveInfo:
    format: str
    path: Path
    sha256: str
    size: int
    chunks: int = 0
    reused: int = 0
    seconds: float = 0.0
    composed: bool = True
    image: str = ""  # an image format's manifest digest (what a registry pull shows)
    ahead: int = 0  # of the parts, how many were made while the layers above them built


@dataclass
class ExportJob:
    template: Template
    store: Store
    layers: list[LayerEntry]  # the stack's store entries, bottom first
    tree: Callable[[], list[Entry]]  # the merged, checked tree (made when first asked for)
    out_dir: Path
    jobs: int | None = None
    progress: Callable[[int, int], None] | None = None  # (chunks done, of which reused)
    started: Callable[[Path], None] | None = None  # called when real work (not a no-op) begins
    # (bytes of the uncompressed stream done, of about how many, bytes per second), now and then
    advance: Callable[[int, int, float], None] | None = None
    # The stack's lock without archives (made before any output): an image labels itself with
    # its digest, an SBOM is made from it alone.
    lock: Lockfile | None = None
    # This format's work done ahead in this build (what `Exporter.ahead` returned), if any.
    ahead: Ahead | None = None


class Cancelled(Exception):
    """Work ahead stopped because the build ended first (failed or interrupted)."""


Job = Callable[[threading.Event], None]
"""Work ahead: run in a background thread; it checks the event now and then and raises
:class:`Cancelled` once it is set."""


class Ahead(abc.ABC):
    """The part of one build's export that can start before the whole stack is built.

    Told each layer as it is realised, bottom first, it returns a job to run in the background
    while the layers above it build, or None. Whatever a job makes, it keeps in the store
    exactly as `export` would (under the same keys), so `export` finds it made, and the
    output's bytes do not depend on whether it ran, failed or was cancelled: a job that fails
    leaves its work to `export`, which does it again and reports what goes wrong."""

    @abc.abstractmethod
    def layer(self, entry: LayerEntry, fresh: bool) -> Job | None:
        """`entry` is the next layer up; `fresh`: this build built it (a cached one was most
        likely exported before, a pulled one's outputs come from the cache)."""


class Exporter(abc.ABC):
    format: str

    def filename(self, template: Template) -> str:
        return f"{template.basename}.{self.format}"

    @abc.abstractmethod
    def compressor(self) -> str:
        """What shapes the bytes besides the stack (compressor and version, chunking)."""

    @abc.abstractmethod
    def export(self, job: ExportJob) -> ArchiveInfo: ...

    def keep(self, store: Store, lock: Lockfile, layers: list[LayerEntry], keep: Keep) -> None:  # noqa: B027
        """Add to `keep` what this format stores in `store` for the stack `layers` that `lock`
        pins (nothing by default)."""

    @abc.abstractmethod
    def check(self, path: Path) -> list[Violation]: ...

    def ahead(self, store: Store, mtime: int) -> Ahead | None:
        """What of `export` can run while the stack builds, for a build whose
        SOURCE_DATE_EPOCH is `mtime` (None: nothing)."""
        return None
