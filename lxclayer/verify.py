"""`lxclayer verify`: check what the store holds for a template, and (`--rebuild`) build layers
again, without the cache, and compare.

Checking reads every blob of every locked layer and checks it against its hash: the damage a
later compose would trip on is found now. Rebuilding: the stack below each layer is taken from the store as it is; the layer itself is built afresh
with the same pins (downloaded artifacts are reused: they are checked by sha256) and its
manifest compared with the stored one, path by path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from . import hermetic
from .build import Events, Mode, build, check_locked, layer_context, plan
from .builders import builder
from .definitions import Project, rel
from .errors import DefinitionError, LockError, StoreCorruption
from .evaluate import Evaluator
from .inputs import Artifacts
from .lock import toml as locktoml
from .lock.model import Lockfile
from .manifest import Entry
from .store import LayerEntry, Store

if TYPE_CHECKING:
    from .cache import Cache


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


class Damage(msgspec.Struct, frozen=True):
    """One thing wrong with what the store holds for a locked layer: a damaged blob (with the
    files of the layer that use it), a damaged entry, or an entry the store does not hold."""

    layer: str
    input: str  # the store entry: the layer's input digest
    what: str  # "blob" | "entry" | "missing"
    reason: str  # "blob <hash> does not match its hash", "manifest or meta.json ...", ...
    blob: str = ""
    paths: tuple[str, ...] = ()

    def line(self) -> str:
        if self.what == "blob":
            files = "file" if len(self.paths) == 1 else "files"
            return f"{self.layer}: damaged: {self.reason}; store entry {self.input[:12]}, {files} {', '.join(self.paths)}"
        if self.what == "entry":
            return f"{self.layer}: damaged: store entry {self.input[:12]} ({self.reason})"
        return f"{self.layer}: {self.reason}"


class Checked(msgspec.Struct):
    """What `verify_store` found: per checked layer, its damage (empty: ok)."""

    layers: dict[str, list[Damage]]

    @property
    def damage(self) -> list[Damage]:
        return [d for ds in self.layers.values() for d in ds]


def _blob_damage(store: Store, h: str, size: int, layer: str) -> StoreCorruption | None:
    """Read the blob `h` whole, as the store checks it; the damage, if any. A blob cut short
    says how many of its bytes are left."""
    seen = 0
    try:
        for block in store.iter_blob(h, layer=layer):
            seen += len(block)
    except StoreCorruption as err:
        if seen != size and "missing" not in err.reason:
            err.reason = f"blob {h} has {seen} bytes, its manifest says {size}"
        return err
    return None


@dataclass
class Scan:
    """What `scan_store` found, with the store's own damage reports (what `repair` evicts)."""

    checked: Checked
    found: list[tuple[Damage, StoreCorruption]]


def scan_store(project: Project, store: Store, names: list[str]) -> Scan:
    _check_names(project, names)
    lock = locktoml.read(project.lock_file)
    if lock is None:
        raise DefinitionError("no lockfile: build the template first", file=str(project.lock_file))
    out = Checked(layers={})
    found: list[tuple[Damage, StoreCorruption]] = []
    bad_blobs: dict[str, StoreCorruption | None] = {}  # a blob shared by layers is read once
    with store.session():
        for name, locked in lock.layers.items():
            if names and name not in names:
                continue
            damage: list[tuple[Damage, StoreCorruption | None]] = []
            try:
                entry = store.lookup(locked.input, layer=name)
                if entry is None:
                    damage.append((Damage(name, locked.input, "missing", f"not in the store (input"
                                          f" {locked.input[:12]}); a build makes it"), None))
                else:
                    if entry.output != locked.output:
                        damage.append((Damage(name, locked.input, "entry", f"output {entry.output[:12]}"
                                              f" is not the lock's {locked.output[:12]}"), None))
                    users: dict[str, list[str]] = {}
                    for e in entry.entries:
                        if e.type != "file":
                            continue
                        if e.hash not in bad_blobs:
                            bad_blobs[e.hash] = _blob_damage(store, e.hash, e.size, name)
                        if bad_blobs[e.hash] is not None:
                            users.setdefault(e.hash, []).append(e.path)
                    for h, paths in users.items():
                        err = bad_blobs[h]
                        damage.append((Damage(name, locked.input, "blob", err.reason, h, tuple(paths)), err))
            except StoreCorruption as err:
                damage.append((Damage(name, locked.input, "entry", err.reason), err))
            out.layers[name] = [d for d, _ in damage]
            found.extend((d, err) for d, err in damage if err is not None)
    return Scan(out, found)


def verify_store(project: Project, store: Store, names: list[str]) -> Checked:
    """Every blob and entry the lock's layers (or `names`) use, read and checked as the store
    checks them: per layer what is damaged, naming each damaged blob with the files that use it."""
    return scan_store(project, store, names).checked


class Repaired(msgspec.Struct, frozen=True):
    layer: str
    input: str
    output: str
    how: str  # "built" | "pulled" (from the cache)


def _can_rebuild_here(project: Project, store: Store, lock: Lockfile) -> None:
    """Refuse, before anything is removed, a repair that could only fail: a lock that does not
    describe the project, or a layer whose inputs here (say a host tool's version) are not the
    lock's, so that nothing built here could be the lock's."""
    with store.session():
        check_locked(Evaluator(project, store, lock, Mode.LOCKED, None))
        try:
            plans = plan(project, store, lock, Mode.LOCKED)
        except StoreCorruption:
            return  # damage read while evaluating: the build meets it again, and heals it
    for p in plans:
        if p.input is not None and p.input != lock.layers[p.name].input:
            raise LockError(f"cannot repair here: layer {p.name}: inputs differ from the lock: "
                            f"{'; '.join(p.reasons)}; nothing was removed",
                            file=rel(project.lock_file, project.root))


def repair(project: Project, store: Store, scan: Scan, events: Events | None = None,
           cache: Cache | None = None) -> list[Repaired]:
    """`verify --repair`, as Nix's `--verify --repair`: evict every damaged blob and entry of
    the locked layers (or `names`), then realise the stack with the build's own machinery under
    --locked, so each evicted layer is built again (or pulled again from `cache`) and must come
    out as the lock records it. `scan` is what `scan_store` found. Returns what was repaired."""
    checked, found = scan.checked, scan.found
    lock = locktoml.read(project.lock_file)
    assert lock is not None  # scan_store refused a project without one
    if not checked.damage:
        return []
    _can_rebuild_here(project, store, lock)
    with store.session():
        stack = []
        for locked in lock.layers.values():
            try:
                entry = store.lookup(locked.input)
            except StoreCorruption:
                entry = None
            if entry is not None:
                stack.append(entry)
        for _, err in found:
            store.evict(err, stack)
        for d in checked.damage:
            if d.what == "entry" and not any(x is d for x, _ in found):
                store.remove_entry(d.input)  # whole, but not the lock's output: built again
    res = build(project, store, mode=Mode.LOCKED, write_lock=False, layers_only=True, cache=cache,
                events=events)
    repaired = [Repaired(p.name, p.input or "", p.output or "", p.state) for p in res.layers
                if p.state in ("built", "pulled")]
    return repaired


def verify_rebuild(project: Project, store: Store, names: list[str], events: Events | None = None) -> dict[str, list[str]]:
    events = events or Events()
    _check_names(project, names)
    result: dict[str, list[str]] = {}
    # What is missing is built first (and damage met on the way healed) by the build itself.
    plans = build(project, store, write_lock=False, layers_only=True, events=events).layers
    with store.session():
        entries: list[LayerEntry] = []
        for layer, p in zip(project.layers, plans, strict=True):
            entry = store.lookup(p.input or "", layer=layer.name)
            assert entry is not None, layer.name  # just built
            entries.append(entry)
        for i, layer in enumerate(project.layers):
            if names and layer.name not in names:
                continue
            mod = builder(layer.kind)
            pins = msgspec.convert(entries[i].meta.record.get("artifacts", {}), Artifacts)
            with store.staging(f"verify-{layer.name}") as work:
                ctx = layer_context(layer, project, store, entries[:i], pins, work, Mode.NORMAL, False,
                               lambda m, n=layer.name: events.log(n, m))
                events.log(layer.name, "rebuilding without the cache")
                with hermetic.fixed_umask():
                    rebuilt = mod.realise(ctx)
            result[layer.name] = compare(entries[i].entries, rebuilt.entries)
    return result


class CacheVerdict(msgspec.Struct, frozen=True):
    """A locked layer's entry in the shared cache: whether it has one, and how its claim
    differs from the lock (empty: it agrees)."""

    layer: str
    cached: bool
    problems: list[str]


def verify_cache(project: Project, cache, names: list[str]) -> list[CacheVerdict]:
    """Per locked layer (those of `names`, or all), what the cache's entry claims against the
    lock: a poisoned or stale entry, which a --locked build would refuse, named before one runs."""
    from .cache import status

    lock = locktoml.read(project.lock_file)
    if lock is None:
        raise LockError(f"{project.lock_file}: no lock to check the cache against")
    out = []
    for st in status(cache, lock, outputs_too=True):
        if names and st.name not in names:
            continue
        want = lock.layers[st.name].output
        problems = [] if not st.cached or st.output == want else [
            f"the cache's entry claims output {st.output or '(none)'}, the lock records {want}"]
        out.append(CacheVerdict(layer=st.name, cached=st.cached, problems=problems))
    return out
