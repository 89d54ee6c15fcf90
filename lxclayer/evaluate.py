"""Evaluation: a layer's definition, pins and the outputs below it -> its derivation.

A :class:`Derivation` is what Nix calls a derivation: the layer's input record (builder,
settings, sources, pins, resolved facts, the output digests below it when it reads them) and
the digest of that record, its address in the store. :class:`Evaluator` makes them, once per
run and in one way, for `plan` (before anything is built), `build --locked` (from the lock
alone) and realisation (after pins are resolved and the layers below are built); it also says,
in words, why a derivation differs from the lock's.

Evaluation reads the definitions, the lock and (for the reasons only) the store's records; it
builds and downloads nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import msgspec

from . import kinds
from .definitions import Layer, Project
from .digest import digest
from .errors import StoreCorruption
from .inputs import Artifacts, InputRecord, explain, settings_digest, settings_of
from .lock.model import LockedLayer, Lockfile
from .sources import StatCache, scan_sources
from .store import Store


class Mode(enum.Enum):
    NORMAL = "normal"
    LOCKED = "locked"
    FROZEN = "frozen"


@dataclass(frozen=True)
class Static:
    """What a layer's folder says, whatever the stack: its sources and settings."""

    sources: dict[str, str]
    settings: str
    settings_data: dict[str, Any]


@dataclass
class Derivation:
    layer: Layer
    record: InputRecord
    input: str  # the digest of `record`: the store address
    settings_data: dict[str, Any] = field(default_factory=dict)

    def meta_record(self) -> dict[str, Any]:
        """The record as a store entry keeps it (with the settings, to explain a later change)."""
        rec = msgspec.to_builtins(self.record)
        rec["settings_data"] = self.settings_data
        return rec


@dataclass
class Pending:
    """A layer whose derivation is not known before something is built or resolved (`plan`):
    the record as far as it is known, and why."""

    layer: Layer
    record: InputRecord  # without the pins, facts or outputs below that are not known
    reasons: list[str]


def builder_id(layer: Layer) -> str:
    return f"{layer.kind}/{kinds.spec(layer.kind).version}"


def template_definition_digest(project: Project) -> str:
    t = project.template
    return digest({"name": t.name, "version": t.version, "release": t.release, "arch": t.arch,
                   "source_date_epoch": t.source_date_epoch, "layers": [la.name for la in project.layers]})


class Evaluator:
    """Derivations of one project's layers against one lock; sources are scanned once per run."""

    def __init__(self, project: Project, store: Store, lock: Lockfile | None, mode: Mode = Mode.NORMAL,
                 cache: StatCache | None = None):
        self.project = project
        self.store = store
        self.lock = lock
        self.mode = mode
        self.cache = cache
        self._static: dict[str, Static] = {}

    # --- what the definitions and the lock say ------------------------------------------------

    def static(self, layer: Layer) -> Static:
        st = self._static.get(layer.name)
        if st is None:
            sources = {p: s.lock_value() for p, s in scan_sources(layer.dir, self.project.root, self.cache).items()}
            st = Static(sources=sources, settings=settings_digest(layer), settings_data=settings_of(layer))
            self._static[layer.name] = st
        return st

    def locked(self, layer: Layer) -> LockedLayer | None:
        return self.lock.layers.get(layer.name) if self.lock else None

    def below_names(self, layer: Layer) -> list[str]:
        return [la.name for la in self.project.below(layer.name)]

    def locked_outputs(self, names: list[str]) -> list[str] | None:
        """The output digests the lock records for `names` ("" for a layer it does not know)."""
        if self.lock is None:
            return None
        return [self.lock.layers[n].output if n in self.lock.layers else "" for n in names]

    def pins_reusable(self, layer: Layer, mode: Mode | None = None) -> bool:
        """Whether the lock's pins still hold: the layer's settings and sources are unchanged
        (under --frozen: whenever the lock has the layer)."""
        locked = self.locked(layer)
        if locked is None or locked.kind != layer.kind:
            return False
        if (mode or self.mode) is Mode.FROZEN:
            return True
        st = self.static(layer)
        return locked.settings == st.settings and locked.sources == st.sources

    def locked_pins(self, layer: Layer, mode: Mode | None = None) -> Artifacts | None:
        """The pins a build of `layer` uses without resolving: none for a builder without pins,
        the lock's where they still hold, else None (they must be resolved again)."""
        if not kinds.spec(layer.kind).pins:
            return {}
        return self.locked(layer).artifacts if self.pins_reusable(layer, mode) else None  # type: ignore[union-attr]

    def reads_below(self, layer: Layer) -> bool:
        return kinds.spec(layer.kind).reads_below

    # --- derivations ----------------------------------------------------------------------------

    def record(self, layer: Layer, artifacts: Artifacts, resolved: dict[str, str],
               parents: list[str] | None) -> InputRecord:
        st = self.static(layer)
        t = self.project.template
        return InputRecord(
            kind=layer.kind, builder=builder_id(layer), settings=st.settings, arch=t.arch,
            source_date_epoch=t.source_date_epoch, sources=st.sources, artifacts=artifacts,
            resolved=resolved, parents=parents if self.reads_below(layer) else None,
        )

    def derive(self, layer: Layer, artifacts: Artifacts, resolved: dict[str, str],
               parents: list[str] | None) -> Derivation:
        """The derivation of `layer` with these pins, resolved facts and outputs below
        (`parents` is ignored for a builder that does not read the tree below)."""
        rec = self.record(layer, artifacts, resolved, parents)
        return Derivation(layer=layer, record=rec, input=rec.digest(),
                          settings_data=self.static(layer).settings_data)

    def derivation(self, layer: Layer, pins: Artifacts | None, facts: dict[str, str] | None,
                   outputs_below: list[str | None]) -> Derivation | Pending:
        """The derivation of `layer` from what is known of it: its pins and facts (None: not
        known yet) and the outputs of the layers below (None for one not known yet). Pending,
        with the reasons in words, while any of them that its input depends on is unknown."""
        names = self.below_names(layer)
        unknown = [n for n, o in zip(names, outputs_below, strict=True) if o is None] if self.reads_below(layer) else []
        if pins is None or facts is None or unknown:
            rec = self.record(layer, pins or {}, facts or {}, None)
            reasons = self.reasons(layer, rec, complete=False)
            if pins is None:
                reasons.append("pins are resolved again")
            if unknown:
                reasons.append(f"layer below {unknown[-1]} is built first")
            return Pending(layer=layer, record=rec, reasons=list(dict.fromkeys(reasons)))
        return self.derive(layer, pins, facts, outputs_below)  # type: ignore[arg-type]

    def from_lock(self, layer: Layer) -> Derivation | None:
        """The derivation the lock describes for `layer` as it is defined now (its pins and the
        lock's outputs below): what `build --locked` checks before building anything."""
        locked = self.locked(layer)
        if locked is None:
            return None
        pins = self.locked_pins(layer, Mode.NORMAL)
        return self.derive(layer, pins if pins is not None else {}, locked.resolved,
                           self.locked_outputs(self.below_names(layer)))

    def reasons(self, layer: Layer, record: InputRecord, *, complete: bool = True) -> list[str]:
        """Why `record` differs from the lock's, in words (empty: it does not). `complete=False`
        for a record whose pins or outputs below are not known yet."""
        locked = self.locked(layer)
        names = self.below_names(layer)
        return explain(record, locked, self.locked_outputs(names), names, self._old_settings(locked),
                       self.static(layer).settings_data, complete=complete)

    def _old_settings(self, locked: LockedLayer | None) -> dict[str, Any] | None:
        """The settings of the locked build, if the store still has its record."""
        if locked is None:
            return None
        try:
            entry = self.store.lookup(locked.input)
        except StoreCorruption:
            return None
        return entry.meta.record.get("settings_data") if entry is not None else None
