"""Manifests: what a layer holds, path by path, and how layers stack.

A layer's manifest is a list of :class:`Entry`, one per path, sorted in archive order. File
contents are not in the manifest: a file entry names its content by xxh3-128 hash, and the
bytes live in the store's blob area. A `whiteout` entry deletes a path (and everything under
it) of the layers below. The layer's output digest is the digest of its manifest.
"""

import bisect
from collections.abc import Iterable
from typing import Literal

import msgspec

from .digest import digest
from .errors import BuildError

EntryType = Literal["file", "dir", "symlink", "char", "block", "fifo", "whiteout"]


class Entry(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    path: str  # relative to the root, no leading "./" or "/"
    type: EntryType
    mode: int = 0  # permission bits, 0o7777 at most
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    hash: str = ""  # xxh3-128 of the content (files)
    target: str = ""  # link target (symlinks)
    major: int = 0
    minor: int = 0
    xattrs: dict[str, bytes] = {}
    # A directory made only because something inside it is added: it does not change the
    # owner or mode of a directory of the same name below.
    implicit: bool = False


class Manifest(msgspec.Struct, kw_only=True, frozen=True):
    entries: list[Entry]

    def digest(self) -> str:
        return digest(self.entries)


def sort_key(path: str) -> list[str]:
    """Archive order: by path component, so that a directory comes right before its contents."""
    return path.split("/")


def sorted_entries(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: sort_key(e.path))


def find(entries: list[Entry], path: str) -> Entry | None:
    """The entry for `path` in a list in archive order, by bisection."""
    key = sort_key(path)
    i = bisect.bisect_left(entries, key, key=lambda e: sort_key(e.path))
    if i < len(entries) and entries[i].path == path:
        return entries[i]
    return None


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def _drop_under(tree: dict[str, Entry], prefixes: set[str]) -> None:
    if not prefixes:
        return
    for path in [p for p in tree if any(p.startswith(pre + "/") for pre in prefixes)]:
        del tree[path]


def apply(tree: dict[str, Entry], layer: Iterable[Entry]) -> None:
    """Stack one layer onto `tree` (path -> entry) in place: upper wins, whiteouts delete."""
    additions: list[Entry] = []
    gone: set[str] = set()
    for e in layer:
        if e.type == "whiteout":
            old = tree.pop(e.path, None)
            if old is not None and old.type == "dir":
                gone.add(e.path)
        else:
            additions.append(e)
            old = tree.get(e.path)
            if old is not None and old.type == "dir" and e.type != "dir":
                gone.add(e.path)
    _drop_under(tree, gone)
    for e in additions:
        if e.implicit:
            old = tree.get(e.path)
            if old is not None and old.type == "dir":
                continue
        tree[e.path] = e


def merge(layers: Iterable[Iterable[Entry]], *, mtime: int = 0) -> list[Entry]:
    """The merged root file system of a stack of layers (bottom first), in archive order.

    Every path's parent is a directory in the result: a missing parent is added as a plain
    0755 root directory; a parent that is not a directory is an error."""
    tree: dict[str, Entry] = {}
    for layer in layers:
        apply(tree, layer)
    missing: dict[str, Entry] = {}
    for path in tree:
        parent = parent_of(path)
        while parent and parent not in tree and parent not in missing:
            missing[parent] = Entry(path=parent, type="dir", mode=0o755, mtime=mtime, implicit=True)
            parent = parent_of(parent)
    tree.update(missing)
    for path in tree:
        parent = parent_of(path)
        if parent and tree[parent].type != "dir":
            raise BuildError(
                f"{path!r} is inside {parent!r}, which is a {tree[parent].type}, not a directory"
            )
    return sorted_entries(tree.values())


def diff(base: dict[str, Entry], new: dict[str, Entry]) -> list[Entry]:
    """The layer that turns `base` into `new`: changed and added entries, and whiteouts for
    paths that are gone (one whiteout for a removed directory, none for what was under it)."""
    out = [e for path, e in new.items() if base.get(path) != e]
    for path in base:
        if path in new:
            continue
        parent = parent_of(path)
        if parent and parent in base and parent not in new:
            continue  # covered by the parent's whiteout
        out.append(Entry(path=path, type="whiteout"))
    return sorted_entries(out)
