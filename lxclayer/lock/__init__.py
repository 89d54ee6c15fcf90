"""The lockfile: a small package of its own (model, TOML reading and writing, diff)."""

from .model import Artifact, LockedArchive, LockedLayer, LockedTemplate, Lockfile

__all__ = ["Artifact", "LockedArchive", "LockedLayer", "LockedTemplate", "Lockfile"]
