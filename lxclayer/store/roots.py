"""GC roots: which lockfiles a store must keep everything for (Nix's gcroots/auto).

A store is shared by every project of a user (and, on CI machines, by every job), so `gc` may
not decide from one checkout's `locks/` what the store no longer needs. Instead every build
registers the lockfile it builds for as a root: a symbolic link

    <store>/roots/<xxh3-128 of the lockfile's absolute path>  ->  /abs/path/locks/NAME.lock

`gc` keeps whatever any live root's lockfile needs. A root whose lockfile is gone (the checkout
was deleted) is dead; gc removes it and says so. A root's target is only ever read as a
lockfile; a link is replaced atomically (made beside it, then renamed over it).

The functions here work on the roots folder of a local store; the rest of lxclayer reaches
roots through the `Store` interface (`register_root`, `roots`, `remove_root`).
"""

from __future__ import annotations

import os
from pathlib import Path

import xxhash

from .model import Root

ROOTS = "roots"  # the folder under the store's root


def register(d: Path, lock_file: Path) -> Path:
    """Make `lock_file` a root of the store whose roots folder is `d` (idempotent). Returns the link."""
    target = Path(os.path.abspath(lock_file))
    d.mkdir(parents=True, exist_ok=True)
    link = d / xxhash.xxh3_128_hexdigest(str(target).encode("utf-8", "surrogateescape"))
    try:
        if os.readlink(link) == str(target):
            return link
    except OSError:
        pass
    tmp = d / f".{link.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return link


def roots(d: Path) -> list[Root]:
    """Every root registered in `d`, live or dead, sorted by lockfile path."""
    if not d.is_dir():
        return []
    out = []
    for link in d.iterdir():
        if link.name.startswith("."):
            continue
        try:
            out.append(Root(link=link, lock_file=Path(os.readlink(link))))
        except OSError:
            continue  # not a link: nothing lxclayer made
    return sorted(out, key=lambda r: str(r.lock_file))


def remove(root: Root) -> None:
    root.link.unlink(missing_ok=True)


def clean_temporaries(d: Path) -> None:
    """Links left half-made by a killed `register` (only called while gc holds the store)."""
    if d.is_dir():
        for tmp in d.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
