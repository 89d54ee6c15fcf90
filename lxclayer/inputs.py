"""Input records and digests: everything a layer's output is a function of.

A layer's input record holds the builder kind and version, the digest of its normalised
settings, its source files (content and executable bit), the pinned artifacts, facts resolved
from the stack below, the template facts that reach into every layer (architecture,
SOURCE_DATE_EPOCH), and, for builders that read the tree below, the output digests of the
layers under it. The input digest is the digest of that record: the layer's store address.
"""

from typing import Any

import msgspec

from .definitions import Layer
from .digest import digest
from .lock.model import EMPTY_DIR, Artifact, LockedLayer

Artifacts = dict[str, dict[str, Artifact]]

# Keys of a layer's settings that do not change what it builds.
COSMETIC = ("description", "requires")


class InputRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: str
    builder: str
    settings: str
    arch: str
    source_date_epoch: int
    sources: dict[str, str] = {}
    artifacts: Artifacts = {}
    resolved: dict[str, str] = {}
    parents: list[str] | None = None  # output digests below, bottom first, if read

    def digest(self) -> str:
        return digest(self)


def settings_of(layer: Layer) -> dict[str, Any]:
    data = msgspec.to_builtins(layer.spec)
    for key in COSMETIC:
        data.pop(key, None)
    data["kind"] = layer.kind
    return data


def settings_digest(layer: Layer) -> str:
    return digest(settings_of(layer))


def explain(record: InputRecord, locked: LockedLayer | None, locked_parents: list[str] | None,
            below_names: list[str], old_settings: dict[str, Any] | None = None,
            new_settings: dict[str, Any] | None = None, *, complete: bool = True) -> list[str]:
    """Why `record` differs from what the lock recorded, in words (empty: it does not).

    `complete=False`: the record is not whole yet (the outputs below or the pins are not known
    before something is built), so its digest says nothing and no reason is guessed from it."""
    if locked is None:
        return ["new layer (not in the lock)"]
    why: list[str] = []
    if locked.kind != record.kind:
        why.append(f"kind {locked.kind} -> {record.kind}")
    if locked.builder != record.builder:
        why.append(f"builder {locked.builder} -> {record.builder}")
    if locked.settings != record.settings:
        keys = _changed_keys(old_settings, new_settings)
        if keys:
            why.extend(f"setting {k} changed" for k in keys)
        else:
            why.append("settings in layer.toml changed")
    for path in sorted(set(locked.sources) | set(record.sources)):
        old, new = locked.sources.get(path), record.sources.get(path)
        if old == new:
            continue
        if old is None:
            why.append(f"{_what(new)} {path} added")
        elif new is None:
            why.append(f"{_what(old)} {path} removed")
        else:
            why.append(f"file {path} changed")
    for group in sorted(set(locked.artifacts) | set(record.artifacts)):
        old_g, new_g = locked.artifacts.get(group, {}), record.artifacts.get(group, {})
        for name in sorted(set(old_g) | set(new_g)):
            a, b = old_g.get(name), new_g.get(name)
            if a == b:
                continue
            if a is None:
                why.append(f"pin {name} {b.version} added")  # type: ignore[union-attr]
            elif b is None:
                why.append(f"pin {name} {a.version} removed")
            elif a.version != b.version:
                why.append(f"pin {name} {a.version} -> {b.version}")
            else:
                why.append(f"pin {name} {a.version} changed (sha256)")
    for key in sorted(set(locked.resolved) | set(record.resolved)):
        old_v, new_v = locked.resolved.get(key), record.resolved.get(key)
        if old_v == new_v:
            continue
        if key.startswith("tool "):  # a host tool's version (see builders.mmdebstrap.HOST_TOOLS)
            why.append(f"{key} {old_v or 'not recorded'} -> {new_v or 'not used'}")
        else:
            why.append(f"{key} resolves to {new_v} (was {old_v})")
    if record.parents is not None and locked_parents is not None:
        for name, old, new in zip(below_names, locked_parents, record.parents, strict=False):
            if old != new:
                why.append(f"layer below {name} changed")
    if record.parents is not None and not locked.parents:
        why.append("now reads the layers below")
    if not why and complete and locked.input != record.digest():
        why.append("template architecture or SOURCE_DATE_EPOCH changed")
    return why


def _what(source: str | None) -> str:
    return "folder" if source == EMPTY_DIR else "file"


def _changed_keys(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    if old is None or new is None:
        return []
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
