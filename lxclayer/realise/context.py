"""What realisation hands a builder (`Context`: the layer, the stack below, its pins, a work
folder), and what a builder hands back (`Result`)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..definitions import Layer, Project
from ..lock.model import Artifact
from ..manifest import Entry, find, merge
from ..materialise import materialise
from ..snapshots import Policy
from ..store import LayerEntry, Store

# Artifacts a layer installs, by group ("packages", "wheels", "tools", "tarballs") and name.
Artifacts = dict[str, dict[str, Artifact]]


@dataclass
class Context:
    layer: Layer
    project: Project
    store: Store
    below: list[LayerEntry]  # stored entries of the layers below, bottom first
    artifacts: Artifacts  # pins: from the lock, or from resolve()
    workdir: Path  # an empty folder of the store's staging area, removed afterwards
    offline: bool = False
    locked: bool = False
    log: Callable[[str], None] = lambda msg: None
    # Run programs on an overlay of the snapshots of the layers below (see lxclayer.snapshots).
    snapshots: Policy = field(default_factory=Policy)
    program_seconds: float = 0.0  # time spent in the programs the builder ran
    input: str = ""  # the layer's input digest, once known (names its snapshot)
    resolved_at: str = ""  # when the lock's pins were resolved ("" if unknown or resolved now)
    _lower: list[Entry] | None = field(default=None, repr=False)

    @property
    def source_date_epoch(self) -> int:
        return self.project.template.source_date_epoch

    @property
    def arch(self) -> str:
        return self.project.template.arch

    def lower_tree(self) -> list[Entry]:
        """The merged root file system of the layers below, in archive order."""
        if self._lower is None:
            self._lower = merge((e.entries for e in self.below), mtime=self.source_date_epoch)
        return self._lower

    def lower_file(self, path: str) -> Entry | None:
        """The entry for `path` in the stack below (None if absent or deleted), found without
        merging the whole stack."""
        parents = []
        p = path.rpartition("/")[0]
        while p:
            parents.append(p)
            p = p.rpartition("/")[0]
        for layer in reversed(self.below):
            e = find(layer.entries, path)
            if e is not None:
                return None if e.type == "whiteout" else e
            for parent in parents:
                pe = find(layer.entries, parent)
                if pe is not None and (pe.type == "whiteout" or pe.type != "dir"):
                    return None
        return None

    def materialise_below(self, dest: Path) -> dict[str, Entry]:
        """Write the stack below into `dest` (needs root); returns path -> entry of what it wrote."""
        tree = self.lower_tree()
        materialise(tree, dest, self.store)
        return {e.path: e for e in tree}


@dataclass
class Result:
    entries: list[Entry]  # the layer's manifest (blobs already in the store)
    artifacts: Artifacts = field(default_factory=dict)  # what it really installed
