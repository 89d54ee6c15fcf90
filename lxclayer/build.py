"""Evaluate, realise, compose: the library API behind `lxclayer plan`, `build` and `lock`.

Evaluation (no building): for each layer bottom-up, its input record and digest, whether the
store has it, and why not. Realisation: build each missing layer into the store. Compose: write
the archive. The lock is read before and written after, as the mode says:

- normal: pins of unchanged layers are kept, changed layers are re-resolved, the lock is written;
- locked: the lock must describe this build exactly; otherwise nothing is built and every
  difference is listed; built outputs and the archive must match the lock;
- frozen: the lock's pins are used as they are, unchecked; the lock is not written.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import hermetic, kinds, outputs, snapshots
from .builders import builder
from .definitions import Layer, Project, rel
from .errors import BuildError, LockError, StoreCorruption
from .evaluate import Derivation, Evaluator, Mode, Pending, builder_id
from .fsio import remove_stale_temporaries
from .inputs import Artifacts
from .lock import parsed as parsed_lock
from .lock import toml as locktoml
from .lock.assemble import assemble_lock, stamp_resolved_at
from .lock.model import Lockfile
from .manifest import merge
from .outputs import ArchiveInfo, ExportJob
from .outputs.ahead import Runner as AheadRunner
from .outputs.ahead import running as ahead_running
from .outputs.provenance import git_source, write_provenance
from .outputs.sbom import write_sbom
from .progress import events as progress_events
from .progress import sink_of
from .realise.context import Context
from .sources import StatCache, cache_for
from .store import LayerEntry, LayerMeta, Store

if TYPE_CHECKING:
    from .cache import Cache, CacheStats


@dataclass
class LayerPlan:
    name: str
    kind: str
    state: str  # "cached" | "build"
    reasons: list[str] = field(default_factory=list)
    input: str | None = None  # None: not known until a layer below or the pins are resolved
    output: str | None = None
    seconds: float = 0.0
    program_seconds: float = 0.0  # of `seconds`, the time of the programs the builder ran


@dataclass
class BuildResult:
    layers: list[LayerPlan]
    archives: list[ArchiveInfo]
    lock_file: Path
    lock_written: bool
    seconds: float
    sbom: Path | None = None  # the SPDX document written beside the archives
    cache: CacheStats | None = None  # what the shared cache gave and took, when one was used
    provenance: Path | None = None  # the SLSA provenance statement written beside the archives


class Events:
    """What a build tells the person watching it. The CLI prints; tests may listen."""

    def layer_start(self, plan: LayerPlan) -> None: ...
    def layer_done(self, plan: LayerPlan) -> None: ...
    def log(self, layer: str, message: str) -> None: ...
    def compose_start(self, fmt: str, path: Path) -> None: ...
    def compose_progress(self, fmt: str, chunks: int, reused: int) -> None: ...
    def compose_done(self, info: ArchiveInfo) -> None: ...
    def warn(self, message: str) -> None: ...


# --- plan and --locked, over the evaluator --------------------------------------------------------


def plan(project: Project, store: Store, lock: Lockfile | None, mode: Mode = Mode.NORMAL) -> list[LayerPlan]:
    """Per layer: `cached` or `build`, and why. Builds nothing and resolves nothing."""
    cache = cache_for(store, project.root) if store.exists() else None
    ev = Evaluator(project, store, lock, mode, cache)
    out: list[LayerPlan] = []
    outputs: list[str | None] = []
    entries: list[LayerEntry | None] = []
    for layer in project.layers:
        locked = ev.locked(layer)
        p = LayerPlan(name=layer.name, kind=layer.kind, state="build")
        # The builder reads its facts from the layers below only when the store has them all.
        ctx = (layer_context(layer, project, store, [e for e in entries if e], {}, None, mode, False)
               if kinds.spec(layer.kind).facts and all(e is not None for e in entries) else None)
        drv = derive_layer(ev, layer, outputs, ctx)
        if isinstance(drv, Pending):  # not known before something else is built or resolved
            p.reasons = drv.reasons
            out.append(p)
            outputs.append(None)
            entries.append(None)
            continue
        p.input = drv.input
        try:
            entry = store.lookup(p.input, layer=layer.name)
        except StoreCorruption as e:
            entry = None
            p.reasons.append(f"store entry is damaged ({e.reason})")
        if entry is not None:
            p.state, p.output = "cached", entry.output
        elif locked and locked.input == p.input:
            p.output = locked.output
            p.reasons.append("not in the store (the lock records it)")
        else:
            p.reasons.extend(ev.reasons(layer, drv.record) or ["not in the store"])
        out.append(p)
        outputs.append(p.output)
        entries.append(entry)
    if cache is not None:
        cache.save()
    return out


def derive_layer(ev: Evaluator, layer: Layer, outputs_below: list[str | None], ctx: Context | None,
                 resolve: Callable[[Context], Artifacts] | None = None) -> Derivation | Pending:
    """The one way a layer is derived, for `plan` and realisation alike: its pins (the lock's
    while they hold, else what `resolve` pins when realising, else not known), the facts its
    builder reads (from `ctx`, on the layers below as the store has them; without one, the
    lock's), and the outputs of the layers below (None: not known yet). The pins become
    `ctx.artifacts`."""
    pins = ev.locked_pins(layer)
    if pins is None and resolve is not None and ctx is not None:
        pins = resolve(ctx)
    if ctx is not None and pins is not None:
        ctx.artifacts = pins
    facts: dict[str, str] | None = {}
    if kinds.spec(layer.kind).facts:
        if ctx is not None:
            facts = builder(layer.kind).resolved_inputs(ctx)
        else:
            locked = ev.locked(layer)
            facts = locked.resolved if locked else None
    return ev.derivation(layer, pins, facts, outputs_below)


def check_locked(ev: Evaluator) -> None:
    """Under --locked: refuse, listing every difference, unless the lock describes this build."""
    project, lock = ev.project, ev.lock
    shown = rel(project.lock_file, project.root)
    if lock is None:
        raise LockError("no lockfile: run `lxclayer lock` (or a build without --locked) first", file=shown)
    problems: list[str] = []
    t = lock.template
    tpl = project.template
    for key, old, new in (("name", t.name, tpl.name), ("version", t.version, tpl.version),
                          ("release", t.release, tpl.release), ("arch", t.arch, tpl.arch),
                          ("source_date_epoch", t.source_date_epoch, tpl.source_date_epoch)):
        if old != new:
            problems.append(f"template: {key} {old} -> {new}")
    names = [la.name for la in project.layers]
    if list(lock.layers) != names:
        added = [n for n in names if n not in lock.layers]
        gone = [n for n in lock.layers if n not in names]
        problems.extend(f"layer {n}: added" for n in added)
        problems.extend(f"layer {n}: removed" for n in gone)
        if not added and not gone:
            problems.append(f"layer order: {' '.join(lock.layers)} -> {' '.join(names)}")
    for layer in project.layers:
        drv = ev.from_lock(layer)
        if drv is None or drv.input == lock.layers[layer.name].input:
            continue
        # A parent's change is reported at the parent; a layer with no change of its own is
        # not listed.
        why = [w for w in ev.reasons(layer, drv.record) if not w.startswith("layer below ")]
        problems.extend(f"layer {layer.name}: {w}" for w in why)
    if problems:
        raise LockError(
            "the lock does not describe this build (run `lxclayer lock` to update it):\n  "
            + "\n  ".join(problems),
            file=shown,
        )


# --- realisation -----------------------------------------------------------------------------


def layer_context(layer: Layer, project: Project, store: Store, below: list[LayerEntry], artifacts: Artifacts,
             workdir: Path | None, mode: Mode, offline: bool,
             log: Callable[[str], None] | None = None, snaps: snapshots.Policy | None = None) -> Context:
    return Context(layer=layer, project=project, store=store, below=below, artifacts=artifacts,
                   workdir=workdir or store.tmp_dir(), offline=offline, locked=mode is Mode.LOCKED,
                   log=log or (lambda m: None), snapshots=snaps or snapshots.Policy())


def _lookup(store: Store, digest_: str, layer: Layer, mode: Mode, events: Events) -> LayerEntry | None:
    # The manifest's bytes are checked here, blobs when they are read (snapshots, compose,
    # builders reading the layers below): damage raises StoreCorruption, which `build` meets
    # in one place (`_heal`).
    return store.lookup(digest_, layer=layer.name)


def _heal(store: Store, damage: StoreCorruption, stack: list[LayerEntry], events: Events,
          seen: set[tuple[str, str]]) -> None:
    """The one place a build meets damage in the store: evict what `damage` names (a damaged
    entry, or a damaged blob and the entries of `stack` that use it) so that the build, run
    again, builds those layers anew (or pulls them from the cache), under --locked too, where
    each rebuilt output must still be the lock's. The same damage met twice is raised."""
    key = (damage.entry, damage.reason)
    if key in seen:
        raise damage
    seen.add(key)
    removed = store.evict(damage, stack)
    names = {e.input: e.meta.layer or e.layer or "?" for e in stack}
    layers = [names.get(d) or damage.layer or d[:12] for d in removed]
    again = f"building {', '.join(dict.fromkeys(layers))} again" if layers else "building again"
    events.warn(f"{damage.message()}: removed from the store; {again}")


def realise_layer(project: Project, layer: Layer, store: Store, below: list[LayerEntry], lock: Lockfile | None,
                  mode: Mode, offline: bool, events: Events, cache: StatCache | None = None,
                  ev: Evaluator | None = None, substituter: Cache | None = None,
                  snaps: snapshots.Policy | None = None) -> tuple[LayerEntry, LayerPlan]:
    """Find `layer` in the store, or build it there: resolve its pins if the lock's no longer
    hold, derive its input digest from them and the layers `below`, build if missing."""
    ev = ev or Evaluator(project, store, lock, mode, cache)
    mod = builder(layer.kind)
    locked = ev.locked(layer)
    p = LayerPlan(name=layer.name, kind=layer.kind, state="build")
    t0 = time.monotonic()

    def log(message: str) -> None:
        events.log(layer.name, message)

    # What the builder's programs, downloads and transfers emit goes to the build's sink, for this layer.
    with progress_events.routed(sink_of(events), layer.name), store.staging(f"build-{layer.name}") as work:
        ctx = layer_context(layer, project, store, below, {}, work, mode, offline, log, snaps)

        def resolve(ctx: Context) -> Artifacts:
            if mode is Mode.LOCKED:
                raise LockError(f"layer {layer.name}: pins are not in the lock",
                                file=rel(project.lock_file, project.root))
            events.log(layer.name, "resolving pins")
            with hermetic.fixed_umask():
                return mod.resolve(ctx)

        drv = derive_layer(ev, layer, [e.output for e in below], ctx, resolve)
        assert isinstance(drv, Derivation)  # (pins resolved, the layers below built: all is known)
        artifacts = ctx.artifacts
        if locked is not None and artifacts == locked.artifacts:
            ctx.resolved_at = locked.resolved_at  # ({timestamp} of the artifact fallbacks)
        p.input = drv.input
        ctx.input = p.input
        if mode is Mode.LOCKED and locked is not None and p.input != locked.input:
            why = ev.reasons(layer, drv.record)
            raise LockError(f"layer {layer.name}: inputs differ from the lock: {'; '.join(why)}",
                            file=rel(project.lock_file, project.root))
        entry = _lookup(store, p.input, layer, mode, events)
        if entry is None:
            p.reasons = ev.reasons(layer, drv.record) or ["not in the store"]
            if substituter is None:
                events.layer_start(p)  # (with a cache: once it is known that the layer is built here)
            with store.layer_lock(p.input):
                entry = _lookup(store, p.input, layer, mode, events)  # built meanwhile by another run?
                pulled = None
                if entry is None and substituter is not None:
                    pulled = substituter.substitute(
                        layer.name, p.input, store, builder=builder_id(layer),
                        want_output=locked.output if mode is Mode.LOCKED and locked is not None else None)
                if entry is None:
                    if pulled is not None:
                        entries, reported, p.state = pulled.entries, pulled.meta.artifacts, "pulled"
                    else:
                        if substituter is not None:
                            events.layer_start(p)
                        with hermetic.fixed_umask():
                            result = mod.realise(ctx)
                        entries, reported, p.state = result.entries, result.artifacts, "built"
                    # The input record and pins are this build's own (they hash to the input
                    # digest); only the built files may come from the cache, checked.
                    meta = LayerMeta(input=p.input, output="", kind=layer.kind, builder=builder_id(layer),
                                     layer=layer.name, record=drv.meta_record(),
                                     # The lock records the pins that went into the input digest;
                                     # a builder without pins may still report what it installed.
                                     artifacts=artifacts if kinds.spec(layer.kind).pins else reported)
                    entry = store.publish(meta, entries)
                else:
                    p.state = "cached"
        else:
            p.state = "cached"
    p.output = entry.output
    p.seconds = time.monotonic() - t0
    p.program_seconds = ctx.program_seconds
    if mode is Mode.LOCKED and locked is not None and entry.output != locked.output:
        raise LockError(
            f"layer {layer.name} built to output {entry.output[:12]}, the lock records {locked.output[:12]}:"
            " the build is not reproducible here (try `lxclayer verify --rebuild " + layer.name + "`)",
            file=rel(project.lock_file, project.root),
        )
    return entry, p


def build(project: Project, store: Store, *, mode: Mode = Mode.NORMAL, offline: bool = False,
          formats: list[str] | None = None, out_dir: Path | None = None, write_lock: bool = True,
          jobs: int | None = None, events: Events | None = None,
          ignore_lock_pins: bool = False, cache: Cache | None = None,
          snapshots_on: bool | None = None, layers_only: bool = False,
          repin: Callable[[Lockfile | None], Lockfile | None] | None = None) -> BuildResult:
    """Build every layer that the store lacks, compose the archive(s), write the lock.
    `snapshots_on`: realise program layers on snapshots (None: as $LXCLAYER_SNAPSHOTS says).
    `layers_only`: the store's entries only, no archive and no SBOM (`verify --repair`).
    `repin`: the pins to build with, made from the lock (`lock --upgrade --layer/--security-only`,
    lxclayer.upgrade); None from it means every layer is resolved again."""
    events = events or Events()
    snaps = snapshots.Policy.choose(snapshots_on, events.warn)
    t0 = time.monotonic()
    out_dir = out_dir or project.root / "dist"
    formats = [] if layers_only else formats or list(project.template.formats)
    lock_path = project.lock_file
    # (the layers route their own; this covers the shared cache's transfers after them)
    with progress_events.routed(sink_of(events)), store.session(), store.project_lock(lock_path):
        lock = parsed_lock.read(lock_path, store)  # read under the project lock: another build may have written it
        for folder in (out_dir, lock_path.parent):
            remove_stale_temporaries(folder)
        # This project's lock is a GC root of the store from now on: `gc`, run from any project
        # sharing the store, keeps what it names (a root whose lockfile never appears is dead).
        store.register_root(lock_path)
        cache_ = cache_for(store, project.root)
        shared = None if offline else cache
        ev = Evaluator(project, store, lock, mode, cache_)
        if mode is Mode.LOCKED:
            check_locked(ev)
        pins_from = None if ignore_lock_pins else lock
        if repin is not None:
            pins_from = repin(lock)
        if ignore_lock_pins or repin is not None:
            ev = Evaluator(project, store, pins_from, mode, cache_)
        seen: set[tuple[str, str]] = set()
        while True:
            try:
                entries: list[LayerEntry] = []
                plans: list[LayerPlan] = []
                # (what of the exports can run while the layers above build: outputs/ahead.py)
                with ahead_running(store, formats, project.template.source_date_epoch) as ahead:
                    for layer in project.layers:
                        entry, p = realise_layer(project, layer, store, entries, pins_from, mode, offline, events,
                                                 cache_, ev, substituter=shared, snaps=snaps)
                        entries.append(entry)
                        plans.append(p)
                        events.layer_done(p)
                        # (a pulled layer's image blob comes from the cache with the outputs)
                        ahead.layer(entry, fresh=p.state == "built")
                    tree = _checked_tree(entries, project.template.source_date_epoch)
                    stack_lock = assemble_lock(project, entries, [], None, outputs.compressor_of)
                    pulled: dict[str, list[str]] = {}
                    if shared is not None and (any(p.state != "cached" for p in plans) or not all(
                            (out_dir / outputs.exporter(f).filename(project.template)).exists() for f in formats)):
                        pulled = {f: shared.fetch_outputs(outputs.cache_key(stack_lock, f), store) for f in formats}
                    archives = _export_all(project, store, tree, formats, out_dir, entries, stack_lock, jobs, events,
                                           ahead)
                # every template's SBOM, from its lock alone
                sbom = write_sbom(stack_lock, out_dir) if formats else None
                break
            except StoreCorruption as e:
                _heal(store, e, entries, events, seen)
        if mode is Mode.LOCKED and lock is not None:
            for i, a in enumerate(archives):
                want = lock.template.archives.get(a.format)
                if want is not None and want.sha256 != a.sha256 and pulled.get(a.format):
                    # made from the cache's chunks: those are not trusted over the lock
                    events.warn(f"{a.path.name} made from the cache's chunks is not the lock's; composing here")
                    for name in pulled[a.format]:
                        store.remove_chunk(name)
                    a = archives[i] = _export(project, store, tree, a.format, out_dir, entries, stack_lock,
                                              jobs, events)
                if want is not None and want.sha256 != a.sha256:
                    raise LockError(
                        f"{a.path.name}: sha256 {a.sha256} differs from the lock's {want.sha256}"
                        " (the compressor or a layer is not reproducible here)",
                        file=rel(project.lock_file, project.root))
        cache_.save()
        if shared is not None and shared.settings.push:
            shared.upload([(layer.name, e) for layer, e in zip(project.layers, entries, strict=True)], store)
            for fmt in formats:
                shared.upload_outputs(outputs.cache_key(stack_lock, fmt),
                                      lambda fmt=fmt: outputs.kept(store, fmt, stack_lock, entries), store)
        wrote = False
        new = stamp_resolved_at(assemble_lock(project, entries, archives, lock, outputs.compressor_of), lock)
        if write_lock and mode is Mode.NORMAL:
            if lock is None or locktoml.dumps(new) != locktoml.dumps(lock):
                locktoml.write(lock_path, new)
                wrote = True
        # SLSA provenance of what this build made: after the lock is written, so that its git
        # state (dirty or not) is the tree's as the build leaves it
        prov = write_provenance(new, out_dir, git_source(project.root, exclude=[out_dir])) if formats else None
    return BuildResult(layers=plans, archives=archives, lock_file=lock_path, lock_written=wrote,
                       seconds=time.monotonic() - t0, sbom=sbom, cache=shared.stats if shared else None,
                       provenance=prov)


def _checked_tree(entries: list[LayerEntry], mtime: int) -> Callable[[], list]:
    """The merged tree, checked against the template rules; made only when first asked for
    (a no-op build never needs it)."""
    from .check import check_members  # imported late: keeps start-up light

    lock = threading.Lock()  # exporters run in threads; the tree is made once

    @functools.cache
    def made() -> list:
        merged = merge((e.entries for e in entries), mtime=mtime)
        violations = check_members(_members(merged))
        if violations:
            raise BuildError("the composed tree breaks the template rules:\n  " + "\n  ".join(
                f"{v.path}: {v.message} ({v.rule})" for v in violations[:20]))
        return merged

    def tree() -> list:
        with lock:
            return made()

    return tree


def _members(entries):
    from .check import Member
    from .tarformat import member_name

    yield Member(name="./", type="dir", uid=0, gid=0, mode=0o755)
    for e in entries:
        yield Member(name=member_name(e), type=e.type, uid=e.uid, gid=e.gid, mode=e.mode,
                     size=e.size, linkname=e.target, xattrs=tuple(e.xattrs))

SWITCH_INTERVAL = 0.0005  # seconds: the GIL's switch interval while exporters run side by side


def _export_all(project: Project, store: Store, tree: Callable[[], list], formats: list[str], out_dir: Path,
                entries: list[LayerEntry], stack_lock: Lockfile, jobs: int | None, events: Events,
                ahead: AheadRunner | None = None) -> list[ArchiveInfo]:
    """Every format's output, side by side: zlib and zstd release the GIL, so a cold build waits
    for the slowest exporter, not for their sum. Each output's bytes depend on nothing of the
    others. The first failure (in format order) is raised once all have ended."""
    if len(formats) < 2:
        return [_export(project, store, tree, fmt, out_dir, entries, stack_lock, jobs, events, ahead)
                for fmt in formats]
    import sys
    from concurrent.futures import ThreadPoolExecutor

    # The exporters' threads take turns at the GIL for their Python parts (tar headers, chunk
    # plans) between long stretches in zlib and zstd, which release it. A thread back from zlib
    # waits up to the switch interval (5 ms) for one busy in Python: thousands of such waits
    # made two exporters side by side slower than one after the other (docs/performance.md).
    # A shorter interval while they run hands the GIL over sooner; the bytes do not change.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, SWITCH_INTERVAL))
    try:
        with ThreadPoolExecutor(max_workers=len(formats), thread_name_prefix="lxclayer-export") as pool:
            futures = [pool.submit(progress_events.bound(_export), project, store, tree, fmt, out_dir, entries,
                                   stack_lock, jobs, events, ahead) for fmt in formats]
            errors = [f.exception() for f in futures]
    finally:
        sys.setswitchinterval(interval)
    for e in errors:
        if e is not None:
            raise e
    return [f.result() for f in futures]


def _export(project: Project, store: Store, tree: Callable[[], list], fmt: str, out_dir: Path,
            entries: list[LayerEntry], stack_lock: Lockfile, jobs: int | None, events: Events,
            ahead: AheadRunner | None = None) -> ArchiveInfo:
    advance = getattr(events, "export_progress", None)
    if ahead is not None:
        ahead.finish(fmt)  # (its work done ahead, found in the store by the export)
    job = ExportJob(template=project.template, store=store, layers=entries, tree=tree, out_dir=out_dir,
                    lock=stack_lock, jobs=jobs, progress=lambda n, r: events.compose_progress(fmt, n, r),
                    started=lambda path: events.compose_start(fmt, path),
                    advance=None if advance is None else lambda done, total, rate: advance(fmt, done, total, rate),
                    ahead=None if ahead is None else ahead.ahead(fmt))
    info = outputs.exporter(fmt).export(job)
    events.compose_done(info)
    return info
