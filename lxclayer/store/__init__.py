"""The store: an interface (:mod:`.base`) and the local store (:mod:`.local`).

`Store(root)` opens the local store; code that needs a store takes a `Store`.
"""

from .base import Keep, Store, Swept
from .local import STORE_FORMAT, LayerEntry, LayerMeta, LocalStore, default_root

__all__ = ["STORE_FORMAT", "Keep", "LayerEntry", "LayerMeta", "LocalStore", "Store", "Swept", "default_root"]
