"""The substituter interface: a remote cache of store entries that fills a local store (Nix's
word for the same thing).

A substituter is asked by input digest; what it answers is an :class:`Offer`: the entry's
metadata and manifest, small, and nothing of its files. The caller decides from the offer
whether it could use the entry at all (the builder that made it, the output it claims, and under
`--locked` the lock's output: :meth:`lxclayer.cache.Cache.substitute`) and only then asks for the
files (:meth:`Substituter.fetch`), which the substituter puts into a local :class:`Store`'s blob
area, each through the store's own hash check. Publishing the entry is the local store's
(`Store.publish`, through the entry gate); a substituter never publishes.

It is not a `Store`: it holds no sessions, locks, staging space, snapshots or GC roots, and
nothing is read from it in place. Whatever a build uses is in the local store first.

The one implementation is :class:`lxclayer.store.registry.RegistryCache` (an OCI registry).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..manifest import Entry
from .base import Store
from .model import LayerEntry, LayerMeta


@dataclass
class Offer:
    """What a substituter holds for one input digest, before any of its files is fetched: its
    metadata and manifest as it sent them (not yet trusted), and the output digest it claims."""

    meta: LayerMeta
    entries: list[Entry]
    claimed_output: str
    source: Any = None  # what the substituter needs to fetch the files (its own business)


@dataclass
class Pulled(Offer):
    """An offer whose files are in the local store (not yet published: the caller decides)."""

    blobs: int = 0  # files put into the store
    bytes: int = 0  # bytes downloaded


class Substituter(abc.ABC):
    """A place that may hold layer entries (and output caches) by input digest."""

    where: str  # how messages name it (never with credentials)

    @abc.abstractmethod
    def query(self, input_digest: str) -> Offer | None:
        """The entry held for `input_digest`, without its files; None when there is none.
        Raises RegistryError (unavailable, or an answer that is not an entry)."""

    @abc.abstractmethod
    def fetch(self, offer: Offer, store: Store) -> Pulled:
        """Put the files of `offer` that `store` lacks into its blob area, each checked against
        its name, and every file the manifest names must then be there. Raises RegistryError
        (refused bytes, unavailable)."""

    @abc.abstractmethod
    def push(self, entry: LayerEntry, store: Store) -> bool:
        """Upload one entry of `store` (only what is missing). False when it was there already."""

    @abc.abstractmethod
    def held(self) -> set[str]:
        """The input digests it holds entries for (one listing)."""

    @abc.abstractmethod
    def claimed_output(self, input_digest: str) -> str | None:
        """The output digest its entry for `input_digest` claims (not checked); None if absent."""

    @abc.abstractmethod
    def fetch_outputs(self, key: str, store: Store) -> list[str]:
        """Put what it keeps for an output under `key` (archive chunks, image blobs) into `store`;
        the names put. What is used is checked by the output's own digest."""

    @abc.abstractmethod
    def push_outputs(self, key: str, names: Callable[[], tuple[Iterable[str], Iterable[str]]],
                     store: Store) -> int:
        """Upload the chunks and artifacts `names()` gives under `key`, unless held; how many."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of connections."""
