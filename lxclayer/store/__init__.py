"""The store: an interface (:mod:`.base`, its types in :mod:`.model`) and the local store
(:mod:`.local`); remote caches that fill it (:mod:`.substituter`, :mod:`.registry`).

`Store(root)` opens the local store; code that needs a store takes a `Store`.
"""

from .base import Keep, Store, Swept
from .local import STORE_FORMAT, LocalStore, default_root
from .model import LayerEntry, LayerMeta, StoredArtifact

__all__ = ["STORE_FORMAT", "Keep", "LayerEntry", "LayerMeta", "LocalStore", "Store", "StoredArtifact", "Swept", "default_root"]
