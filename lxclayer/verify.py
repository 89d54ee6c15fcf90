"""`lxclayer verify`: check what the store holds for a template, and (`--rebuild`) build layers
again, without the cache, and compare.

Checking reads every blob of every locked layer and checks it against its hash: the damage a
later compose would trip on is found now. Rebuilding: the stack below each layer is taken from the store as it is; the layer itself is built afresh
with the same pins (downloaded artifacts are reused: they are checked by sha256) and its
manifest compared with the stored one, path by path.
"""

from __future__ import annotations

import msgspec

from . import hermetic
from .build import Events, Mode, _context, realise_layer
from .builders import builder
from .definitions import Project
from .errors import DefinitionError, StoreCorruption
from .inputs import Artifacts
from .lock import toml as locktoml
from .manifest import Entry
from .store import LayerEntry, Store


def compare(a: list[Entry], b: list[Entry]) -> list[str]:
    """The paths whose type, content, mode, owner, link target or mtime differ."""
    old = {e.path: e for e in a}
    new = {e.path: e for e in b}
    out: list[str] = []
    for path in sorted(set(old) | set(new)):
        x, y = old.get(path), new.get(path)
        if x == y:
            continue
        if x is None:
            out.append(f"{path}: only in the rebuild")
        elif y is None:
            out.append(f"{path}: only in the stored build")
        elif x.type != y.type:
            out.append(f"{path}: type {x.type} -> {y.type}")
        else:
            what = []
            if x.hash != y.hash or x.size != y.size:
                what.append(f"content differs ({x.size} -> {y.size} bytes)")
            if x.mode != y.mode:
                what.append(f"mode {x.mode:04o} -> {y.mode:04o}")
            if (x.uid, x.gid) != (y.uid, y.gid):
                what.append(f"owner {x.uid}:{x.gid} -> {y.uid}:{y.gid}")
            if x.target != y.target:
                what.append(f"target {x.target} -> {y.target}")
            if x.mtime != y.mtime:
                what.append(f"mtime {x.mtime} -> {y.mtime}")
            if x.xattrs != y.xattrs or (x.major, x.minor) != (y.major, y.minor) or x.implicit != y.implicit:
                what.append("xattrs or device numbers differ")
            out.append(f"{path}: {', '.join(what)}")
    return out


def _check_names(project: Project, names: list[str]) -> None:
    known = [la.name for la in project.layers]
    for n in names:
        if n not in known:
            raise DefinitionError(f"no layer {n!r} in the template (layers: {', '.join(known)})")


def verify_store(project: Project, store: Store, names: list[str]) -> dict[str, list[str]]:
    """Per layer of the lock (or of `names`): what is wrong with its store entry and the blobs
    it names (empty: nothing). A layer the store does not hold is reported as such."""
    _check_names(project, names)
    lock = locktoml.read(project.lock_file)
    if lock is None:
        raise DefinitionError("no lockfile: build the template first", file=str(project.lock_file))
    result: dict[str, list[str]] = {}
    checked: set[str] = set()
    with store.session():
        for name, locked in lock.layers.items():
            if names and name not in names:
                continue
            problems: list[str] = []
            try:
                entry = store.lookup(locked.input, layer=name)
                if entry is None:
                    problems.append(f"not in the store (input {locked.input[:12]}); a build makes it")
                else:
                    if entry.output != locked.output:
                        problems.append(f"output {entry.output[:12]} is not the lock's {locked.output[:12]}")
                    for e in entry.entries:
                        if e.type != "file" or e.hash in checked:
                            continue
                        try:
                            for _ in store.iter_blob(e.hash, layer=name):
                                pass
                            checked.add(e.hash)
                        except StoreCorruption as err:
                            problems.append(f"{e.path}: {err.reason}")
            except StoreCorruption as err:
                problems.append(f"store entry {locked.input[:12]}: {err.reason}")
            result[name] = problems
    return result


def verify_rebuild(project: Project, store: Store, names: list[str], events: Events | None = None) -> dict[str, list[str]]:
    events = events or Events()
    _check_names(project, names)
    lock = locktoml.read(project.lock_file)
    result: dict[str, list[str]] = {}
    with store.session():
        entries: list[LayerEntry] = []
        for layer in project.layers:
            entry, _ = realise_layer(project, layer, store, entries, lock, Mode.NORMAL, False, events)
            entries.append(entry)
        for i, layer in enumerate(project.layers):
            if names and layer.name not in names:
                continue


            mod = builder(layer.kind)
            pins = msgspec.convert(entries[i].meta.record.get("artifacts", {}), Artifacts)
            with store.staging(f"verify-{layer.name}") as work:
                ctx = _context(layer, project, store, entries[:i], pins, work, Mode.NORMAL, False,
                               lambda m, n=layer.name: events.log(n, m))
                events.log(layer.name, "rebuilding without the cache")
                with hermetic.fixed_umask():
                    rebuilt = mod.realise(ctx)
            result[layer.name] = compare(entries[i].entries, rebuilt.entries)
    return result
