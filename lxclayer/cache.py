"""The shared layer cache: where it is, when it is asked, and what of it may be used.

The cache is a substituter (:mod:`lxclayer.store.substituter`) in an OCI registry
(:mod:`lxclayer.store.registry`); this module is the policy around it, so that build code asks
one question ("substitute this layer?") and a faulty cache never breaks a build:

- **where:** `--cache REF`, else `$LXCLAYER_CACHE`, else `[cache] url` in the project's
  `lxclayer.toml`; `off` (or none) means no cache. `--offline` never contacts it.
- **mode:** `pull` (read only) or `push` (also upload what was built). Default: `push` when
  `$CI` says this is a CI run, `pull` otherwise.
- **trust:** a pulled entry is used only when its files hash to their names, its manifest to
  the output digest the cache claims, and (under `--locked`) that output digest is the
  lock's. Anything else is refused in one line naming the layer, and the layer is built
  here. Without a lock, whoever can push to the cache is trusted, as with BuildKit.
- **faults:** the client retries with back-off; a cache still unreachable (down, 5xx, refused
  credentials, an answer slower than the deadline) is reported once, in one line, and not asked
  again in this run; so is a cache that has used up the build's time budget.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import settings as project_settings
from .digest import digest
from .errors import DefinitionError
from .lock.model import Lockfile
from .registry import RegistryError, client_for
from .registry.errors import (
    RegistryAuthError,
    RegistryUnavailable,
)
from .store import LayerEntry, Store
from .store.substituter import Offer, Pulled, Substituter

DEADLINE = 30.0
BUDGET = 900.0


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e7:
        raise DefinitionError(f"${name} must be a number of seconds above 0, not {text!r}")
    return value


@dataclass
class CacheSettings:
    url: str
    mode: str = "pull"
    auth_file: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    deadline: float = DEADLINE  # seconds per operation (body included), plus 4 s per MiB of a blob
    budget: float = BUDGET  # seconds the cache may take in one run, all operations together

    @property
    def push(self) -> bool:
        return self.mode == "push"


def settings(root: Path, *, url: str | None = None, mode: str | None = None, auth_file: str | None = None,
             ca_file: str | None = None, insecure: bool = False,
             env: dict[str, str] | None = None) -> CacheSettings | None:
    """The cache this run uses, from the command line, the environment and the project."""
    env = dict(os.environ) if env is None else env
    table = project_settings.load(root).cache
    chosen = url or env.get("LXCLAYER_CACHE") or table.url
    if not chosen or chosen == "off":
        return None
    ci = env.get("CI", "").lower() not in ("", "0", "false", "no")
    chosen_mode = mode or env.get("LXCLAYER_CACHE_MODE") or table.mode or ("push" if ci else "pull")
    if chosen_mode not in project_settings.CACHE_MODES:
        raise DefinitionError(f"cache mode must be one of {', '.join(project_settings.CACHE_MODES)}, "
                              f"not {chosen_mode!r}")
    from .registry import parse_reference

    parse_reference(chosen, what="cache reference")  # bad input: refused now, with the reason
    return CacheSettings(url=chosen, mode=chosen_mode, auth_file=auth_file, ca_file=ca_file, insecure=insecure,
                         deadline=_seconds(env, "LXCLAYER_CACHE_DEADLINE", DEADLINE),
                         budget=_seconds(env, "LXCLAYER_CACHE_BUDGET", BUDGET))


@dataclass
class CacheStats:
    pulled: list[str] = field(default_factory=list)  # layers substituted
    pushed: list[str] = field(default_factory=list)  # layers uploaded
    refused: list[str] = field(default_factory=list)  # layers whose cached entry was not used
    outputs_pulled: int = 0
    outputs_pushed: int = 0
    unavailable: str = ""  # why the cache was given up, if it was


class Cache:
    """One run's view of the cache: lazy, fault-tolerant, and strict about what it lets in."""

    def __init__(self, s: CacheSettings, warn: Callable[[str], None], *,
                 backend: Substituter | None = None):
        self.settings = s
        self.warn = warn
        self._backend = backend
        self.stats = CacheStats()
        self.required = False  # a command that needs the cache says its faults itself (no warning)

    @property
    def where(self) -> str:
        return self.settings.url

    def backend(self) -> Substituter | None:
        """The substituter (the registry cache), opened on first use; None once it was given up."""
        if self.stats.unavailable:
            return None
        if self._backend is None:
            from .registry.client import RetryPolicy
            from .store.registry import RegistryCache

            s = self.settings
            try:
                client = client_for(s.url, auth_file=s.auth_file, ca_file=s.ca_file, insecure=s.insecure,
                                    retry=RetryPolicy(deadline=s.deadline, total=min(s.deadline, 30.0)),
                                    budget_end=time.monotonic() + s.budget)
            except RegistryError as e:
                self._give_up(e)
                return None
            self._backend = RegistryCache(client)
        return self._backend

    def _give_up(self, e: RegistryError) -> None:
        self.stats.unavailable = e.message()
        if not self.required:
            self.warn(f"cache {self.where} unavailable ({e.message()}); building without it")

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    # --- layers -----------------------------------------------------------------------------

    def substitute(self, layer: str, input_digest: str, store: Store, *, builder: str,
                   want_output: str | None) -> Pulled | None:
        """The cached entry for `input_digest`, checked, its files already in `store`; None when
        the cache has none, is unavailable, or its entry is refused (said in one line).

        What can be refused from the entry's metadata and manifest (its output digest, its
        builder, under `--locked` the lock's output, then the entry gate) is refused before any
        of its files is downloaded; the files are checked as they come (each against its name
        and the size the manifest gives it)."""
        backend = self.backend()
        if backend is None:
            return None
        try:
            offer = backend.query(input_digest)
            if offer is None:
                return None
            why = self._refusal(offer, builder, want_output, store)
            if why:
                self._refuse(layer, why)
                return None
            pulled = backend.fetch(offer, store)
        except (RegistryUnavailable, RegistryAuthError) as e:
            self._give_up(e)
            return None
        except RegistryError as e:  # refused bytes, a blob it names but lacks, a malformed digest
            self._refuse(layer, e.message())
            return None
        self.stats.pulled.append(layer)
        return pulled

    @staticmethod
    def _refusal(offer: Offer, builder: str, want_output: str | None, store: Store) -> str:
        """Why an offered entry cannot be used, from its metadata and manifest alone ("" if it may be)."""
        output = digest(offer.entries)
        if output != offer.claimed_output or output != offer.meta.output:
            return f"its manifest hashes to {output[:12]}, the entry claims {offer.claimed_output[:12]}"
        if offer.meta.builder != builder:
            return f"it was made by {offer.meta.builder}, this build uses {builder}"
        if want_output is not None and output != want_output:
            return f"its output {output[:12]} is not the lock's {want_output[:12]}"
        # Self-consistent is not safe: the store's entry gate decides (publish asks it again).
        # A file not yet here is taken at the size the manifest gives it: fetch refuses any other.
        from .entrycheck import check_entries

        declared = {e.hash: e.size for e in offer.entries if e.type == "file" and e.hash}

        def size(h: str) -> int | None:
            have = store.blob_size(h)
            return declared.get(h) if have is None else have

        verdict = check_entries(offer.entries, blob_size=size)
        return "" if verdict.ok else f"unsafe entry: {verdict.reason()}"

    def _refuse(self, layer: str, why: str) -> None:
        self.stats.refused.append(layer)
        self.warn(f"cache: layer {layer} refused: {why}; building it here")

    def upload(self, named: list[tuple[str, LayerEntry]], store: Store, *, force: bool = False) -> None:
        """Push every entry the cache lacks (push mode only, unless `force`)."""
        if not (self.settings.push or force):
            return
        backend = self.backend()
        for name, entry in named:
            if backend is None:
                return
            try:
                if backend.push(entry, store):
                    self.stats.pushed.append(name)
            except RegistryError as e:
                self._give_up(e)
                return

    # --- outputs ----------------------------------------------------------------------------

    def fetch_outputs(self, key: str, store: Store) -> list[str]:
        backend = self.backend()
        if backend is None:
            return []
        try:
            names = backend.fetch_outputs(key, store)
        except (RegistryUnavailable, RegistryAuthError) as e:
            self._give_up(e)
            return []
        except RegistryError as e:  # refused bytes, a blob it names but lacks, a malformed digest
            self.warn(f"cache: outputs refused: {e.message()}; composing here")
            return []
        self.stats.outputs_pulled += len(names)
        return names

    def upload_outputs(self, key: str, names: Callable[[], tuple[set[str], set[str]]], store: Store, *,
                       force: bool = False) -> None:
        """Push what an output format keeps for a stack (`names()`: its chunks and artifacts,
        asked for only when the cache lacks them)."""
        if not (self.settings.push or force):
            return
        backend = self.backend()
        if backend is None:
            return
        try:
            self.stats.outputs_pushed += backend.push_outputs(key, names, store)
        except RegistryError as e:
            self._give_up(e)


# --- what `lxclayer cache` and `verify --cache` do ------------------------------------------------

@dataclass
class LayerStatus:
    name: str
    input: str
    cached: bool
    output: str | None = None  # the output digest the cache's entry claims, when asked


def push_lock(cache: Cache, lock: Lockfile, store: Store) -> list[str]:
    """Upload what `store` holds for `lock` (entries, then outputs once the stack is whole).
    Returns the layers the store lacks (not pushed)."""
    from . import outputs
    from .errors import StoreCorruption

    named: list[tuple[str, LayerEntry]] = []
    missing: list[str] = []
    for name, locked in lock.layers.items():
        try:
            entry = store.lookup(locked.input, layer=name)
        except StoreCorruption:
            entry = None
        if entry is None:
            missing.append(name)
        else:
            named.append((name, entry))
    cache.upload(named, store, force=True)
    if not missing:
        entries = [e for _, e in named]
        for fmt in lock.template.archives:
            if fmt in outputs.FORMATS:
                cache.upload_outputs(outputs.cache_key(lock, fmt),
                                     lambda fmt=fmt: outputs.kept(store, fmt, lock, entries), store, force=True)
    return missing


def status(cache: Cache, lock: Lockfile, *, outputs_too: bool = False) -> list[LayerStatus]:
    """Which of the lock's layers the cache has (one tag listing); with `outputs_too`, the
    output digest each present entry claims. Raises RegistryError: the caller asked for it."""
    backend = cache.backend()
    if backend is None:
        raise RegistryUnavailable(f"cache {cache.where} unavailable: {cache.stats.unavailable}")
    held = backend.held()
    out = []
    for name, locked in lock.layers.items():
        st = LayerStatus(name=name, input=locked.input, cached=locked.input in held)
        if st.cached and outputs_too:
            st.output = backend.claimed_output(locked.input)
        out.append(st)
    return out
