"""`tar.gz` and `tar.zst`: the merged tree as one deterministic archive that `pct create` unpacks,
written by :mod:`lxclayer.compose` in cached, independently compressed chunks."""

from __future__ import annotations

import time
from pathlib import Path

from .. import compose as composer
from ..check import Violation, check_archive
from ..digest import digest
from ..fsio import atomic_write
from ..lock.model import Lockfile
from ..manifest import merge
from ..store import Keep, LayerEntry, Store
from .base import ArchiveInfo, Exporter, ExportJob


class Tarball(Exporter):
    def __init__(self, fmt: str):
        self.format = fmt

    def compressor(self) -> str:
        return composer.compressor_id(self.format)

    def _key(self, layers: list[LayerEntry], source_date_epoch: int) -> str:
        return digest({"outputs": [e.output for e in layers], "fmt": self.format,
                       "compressor": self.compressor(), "mtime": source_date_epoch})

    def export(self, job: ExportJob) -> ArchiveInfo:
        sde = job.template.source_date_epoch
        path = job.out_dir / self.filename(job.template)
        key = self._key(job.layers, sde)
        t0 = time.monotonic()
        known = job.store.composed(key)
        if known is not None and job.store.output_matches(key, path, known):
            _write_sha256(path, known["sha256"])
            return ArchiveInfo(format=self.format, path=path, sha256=known["sha256"], size=known["size"],
                               composed=False)
        if job.started:
            job.started(path)
        res = composer.compose(job.tree(), path, self.format, job.store, mtime=sde, jobs=job.jobs,
                               progress=job.progress, advance=job.advance)
        _write_sha256(path, res.sha256)
        job.store.record_composed(key, path, res.sha256, res.size)
        return ArchiveInfo(format=self.format, path=path, sha256=res.sha256, size=res.size, chunks=res.chunks,
                           reused=res.reused, seconds=time.monotonic() - t0)

    def keep(self, store: Store, lock: Lockfile, layers: list[LayerEntry], keep: Keep) -> None:
        source_date_epoch = lock.template.source_date_epoch
        merged = merge((e.entries for e in layers), mtime=source_date_epoch)
        keep.chunks.update(f"{self.format}-{c.key}"
                           for c in composer.plan_chunks(merged, self.format, source_date_epoch))
        keep.composed.add(self._key(layers, source_date_epoch))

    def check(self, path: Path) -> list[Violation]:
        return check_archive(path)


def _write_sha256(path: Path, sha256: str) -> None:
    """`NAME.sha256` beside the archive, as `sha256sum -c` reads it; rewritten when wrong."""
    sha_file = path.with_name(path.name + ".sha256")
    want = f"{sha256}  {path.name}\n".encode()
    try:
        if sha_file.read_bytes() == want:
            return
    except OSError:
        pass
    atomic_write(sha_file, want)


EXPORTERS = {fmt: Tarball(fmt) for fmt in ("tar.gz", "tar.zst")}
