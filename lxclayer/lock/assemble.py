"""The lock assembled from a build: what the store's entries record for each layer (input
record, output digest, pins), the template, and the archives made.

The store knows nothing of the lockfile: its entries record their artifacts as
`StoredArtifact`s, which have the lock's `Artifact` fields; here they become the lock's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import msgspec

from ..definitions import Project
from ..evaluate import template_definition_digest
from ..store import LayerEntry
from .model import LOCK_VERSION, Artifact, LockedArchive, LockedLayer, LockedTemplate, Lockfile


class MadeArchive(Protocol):
    """What the lock records of an archive an exporter made (`outputs.ArchiveInfo` is one; the
    lock does not import the outputs, which read locks)."""

    format: str
    path: Path
    sha256: str
    size: int
    image: str


def assemble_lock(project: Project, entries: list[LayerEntry], archives: list[MadeArchive],
                  old: Lockfile | None, compressor_of: Callable[[str], str | None]) -> Lockfile:
    """The lock of `project` built to `entries` (its layers', bottom first) with `archives`;
    an `old` lock of the same stack gives the archives of formats not made this time.
    `compressor_of(format)` is the identity of today's compressor of a format (None: a format
    this lxclayer does not know)."""
    layers: dict[str, LockedLayer] = {}
    for layer, entry in zip(project.layers, entries, strict=True):
        rec = entry.meta.record
        layers[layer.name] = LockedLayer(
            kind=layer.kind, builder=entry.meta.builder, settings=rec["settings"], input=entry.input,
            output=entry.output, parents=rec.get("parents") is not None,
            sources=dict(sorted(rec.get("sources", {}).items())),
            resolved=dict(sorted(rec.get("resolved", {}).items())),
            # the store records artifacts in its own type: the lock's have the same fields
            artifacts={g: {n: msgspec.convert(x, Artifact, from_attributes=True) for n, x in sorted(a.items())}
                       for g, a in sorted(entry.meta.artifacts.items())},
        )
    t = project.template
    # Formats built now, plus those of the old lock that were not built this time, as long as
    # the stack is unchanged (`build --format tar.zst` must not drop the lock's tar.gz).
    archives_map = {a.format: LockedArchive(file=a.path.name, sha256=a.sha256, size=a.size, image=a.image)
                    for a in archives}
    compressors = {a.format: compressor_of(a.format) or "" for a in archives}
    if old is not None and [la.output for la in old.layers.values()] == [la.output for la in layers.values()]:
        for fmt, arch in old.template.archives.items():
            if (fmt not in archives_map and compressor_of(fmt) is not None
                    and old.template.compressor.get(fmt) == compressor_of(fmt)):
                archives_map[fmt] = arch
                compressors[fmt] = old.template.compressor[fmt]
    archives_map = dict(sorted(archives_map.items()))
    compressors = dict(sorted(compressors.items()))
    return Lockfile(
        lock_version=LOCK_VERSION,
        template=LockedTemplate(
            name=t.name, version=t.version, release=t.release, arch=t.arch,
            source_date_epoch=t.source_date_epoch, definition=template_definition_digest(project),
            archives=archives_map,
            compressor=compressors,
        ),
        layers=layers,
    )


def stamp_resolved_at(new: Lockfile, old: Lockfile | None) -> Lockfile:
    """`new` with each layer's `resolved_at`: the old lock's where the pins are the old ones,
    now where they were resolved in this run; none for a layer that fetches nothing (no pins,
    or only a tarball beside its layer.toml)."""
    from ..artifacts import fetched, now_resolved_at

    for name, la in new.layers.items():
        prev = old.layers.get(name) if old is not None else None
        if not any(fetched(a) for group in la.artifacts.values() for a in group.values()):
            la.resolved_at = ""
        elif prev is not None and prev.artifacts == la.artifacts:
            la.resolved_at = prev.resolved_at  # (a lock from before resolved_at: not known)
        else:
            la.resolved_at = now_resolved_at()
    return new
