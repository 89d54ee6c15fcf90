"""The entry gate: the one check every layer entry passes before the store publishes it.

Whatever enters the store (built here, pulled from the shared cache, imported from a tarball)
goes through :func:`check_entries` in :meth:`LocalStore.publish`; the cache asks the same
function first, so that a refused pulled entry is one warning and the layer is built here (see
docs/cache.md, "trust"). An entry is *self-consistent* when its manifest hashes to its output
digest, which a cache can always arrange; the gate asks whether it is *safe*: whether writing
it into a directory (materialise, snapshots) can only write inside that directory, and whether
it is something a template can hold.

The structural rules are the archive checker's (:func:`lxclayer.check.check_members`, the rules
``pct create`` relies on), applied to the entry alone, plus what only a manifest can get wrong:

================  ===============================================================================
rule              refused
================  ===============================================================================
``unsafe-name``   a path that is absolute, has ``..``, ``.`` or empty components, a NUL, is not
                  UTF-8, or is too long (4095 bytes, 255 per component); whiteouts alike
``order``         entries not in archive order, or a path twice (lookups bisect the manifest)
``below-symlink`` a path below a symlink of the same entry (it would be written where the link
                  points); ``parent-not-dir``: below a file or device of the same entry
                  (whiteouts below a non-directory are what a directory replaced by a file or a
                  symlink leaves, and are allowed: nothing is written for them)
``type``          a type other than file, dir, symlink, char, block, fifo, whiteout (a manifest
                  holds no hard links: they are files sharing one blob)
``device-outside-dev``  a char or block device outside ``dev/``
``id-range``      uid or gid outside 0..65535
``mode-range``    mode bits outside 0o7777; ``mtime-range``: an mtime beyond ±2**40 s;
                  ``device-number``: major or minor outside 32 bits
``xattr-dropped`` an xattr other than ``user.*`` or ``security.capability`` (what the store keeps)
``file-size``     a file whose hash is not an xxh3-128, whose size is negative, or whose blob
                  is missing or not the size the manifest declares
``symlink-target``  an empty target, a NUL in it, or longer than 4095 bytes
================  ===============================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import msgspec

from .check import MAX_ID, Member, check_members
from .errors import BuildError
from .manifest import Entry, sort_key

TYPES = frozenset({"file", "dir", "symlink", "char", "block", "fifo", "whiteout"})
MAX_PATH = 4095
MAX_COMPONENT = 255
MAX_MTIME = 1 << 40
MAX_DEVICE = (1 << 32) - 1
MAX_MODE = 0o7777
# The archive checker's rules that do not apply to one layer alone: a layer implies the parents
# it does not list (the stack below has them), and names carry no "./".
_NOT_FOR_ENTRIES = frozenset({"missing-parent", "name-prefix"})
_HEX = frozenset("0123456789abcdef")


class Refusal(msgspec.Struct, frozen=True):
    path: str  # the entry's path as the manifest gives it
    rule: str
    message: str

    def line(self) -> str:
        """One line, whatever the path holds (a newline, a control character, 4 KiB)."""
        shown = repr(self.path) if len(self.path) <= 120 else repr(self.path[:100]) + "..."
        return f"{shown}: {self.message} ({self.rule})"


class Verdict(msgspec.Struct, frozen=True):
    refusals: list[Refusal]

    @property
    def ok(self) -> bool:
        return not self.refusals

    def reason(self) -> str:
        """One line: the first refusal, and how many more."""
        if not self.refusals:
            return ""
        more = len(self.refusals) - 1
        return self.refusals[0].line() + (f" (and {more} more)" if more else "")


class UnsafeEntry(BuildError):
    """An entry the gate refuses to publish (built here: a bug or a hostile input to fix)."""

    def __init__(self, verdict: Verdict, *, layer: str):
        self.verdict = verdict
        self.layer = layer
        super().__init__(f"layer {layer or '?'}: refused by the store's entry gate: {verdict.reason()}")


def path_problem(path: str) -> str | None:
    """Why `path` is not a plain relative path inside a root file system, or None."""
    if not path:
        return "empty path"
    if path[0] == "/":
        return "absolute path: it would be written outside the root"
    if "\0" in path:
        return "NUL in the path"
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "the path is not UTF-8"
    if size > MAX_PATH:
        return f"path of {size} bytes (at most {MAX_PATH})"
    for c in path.split("/"):
        if c == "..":
            return "the path has a '..' component: it points outside the root"
        if c in ("", "."):
            return "the path is not normalised (an empty or '.' component)"
        if len(c) > MAX_COMPONENT // 4 and len(c.encode("utf-8")) > MAX_COMPONENT:
            return f"a path component longer than {MAX_COMPONENT} bytes"
    return None


def check_entries(entries: Iterable[Entry], *, blob_size: Callable[[str], int | None] | None = None) -> Verdict:
    """Every reason to refuse a layer entry (empty when it may be published). `blob_size(hash)`,
    when given, is the size of the stored blob (None if missing), checked against the manifest."""
    entries = list(entries)
    out: list[Refusal] = []
    add = out.append
    bad: set[str] = set()  # paths refused by the path rules: kept away from the structural check
    prev: list[str] | None = None
    for e in entries:
        p = e.path
        why = path_problem(p)
        if why is not None:
            add(Refusal(p, "unsafe-name", why))
            bad.add(p)
            continue
        key = sort_key(p)
        if prev is not None and key <= prev:
            add(Refusal(p, "order", "entries are not in archive order, or the path appears twice"))
        prev = key
        t = e.type
        if t not in TYPES:
            add(Refusal(p, "type", f"type {t!r} is not one a layer holds"))
            bad.add(p)
            continue
        if not 0 <= e.mode <= MAX_MODE:
            add(Refusal(p, "mode-range", f"mode {e.mode:#o} has bits outside 0o7777"))
        if not -MAX_MTIME <= e.mtime <= MAX_MTIME:
            add(Refusal(p, "mtime-range", f"mtime {e.mtime} is out of range"))
        if t == "file":
            _check_file(e, blob_size, add)
        elif t == "symlink":
            target = e.target
            if not target or "\0" in target or len(target.encode("utf-8", "surrogatepass")) > MAX_PATH:
                add(Refusal(p, "symlink-target", "empty target, a NUL in it, or longer than "
                            f"{MAX_PATH} bytes"))
        elif t in ("char", "block") and not (0 <= e.major <= MAX_DEVICE and 0 <= e.minor <= MAX_DEVICE):
            add(Refusal(p, "device-number", f"device {e.major}:{e.minor} is out of range"))
    for v in check_members(_members(entries, bad)):
        if v.rule not in _NOT_FOR_ENTRIES:
            path = v.path[2:].rstrip("/") if v.path.startswith("./") else v.path
            add(Refusal(path, "order" if v.rule in ("duplicate", "parent-order") else v.rule, v.message))
    _check_whiteouts(entries, bad, add)
    return Verdict(refusals=out)


def _check_file(e: Entry, blob_size: Callable[[str], int | None] | None, add: Callable[[Refusal], None]) -> None:
    h = e.hash
    if len(h) != 32 or not _HEX.issuperset(h):
        add(Refusal(e.path, "file-size", f"content hash {h[:40]!r} is not an xxh3-128"))
        return
    if e.size < 0:
        add(Refusal(e.path, "file-size", f"size {e.size} is negative"))
        return
    if blob_size is not None:
        real = blob_size(h)
        if real is None:
            add(Refusal(e.path, "file-size", f"its content {h} is not in the store"))
        elif real != e.size:
            add(Refusal(e.path, "file-size", f"the manifest says {e.size} bytes, its content has {real}"))


def _members(entries: list[Entry], bad: set[str]) -> Iterator[Member]:
    """The entry's non-whiteout paths as the archive checker sees them (no root member: the
    root is there already)."""
    for e in entries:
        if e.type == "whiteout" or e.path in bad:
            continue
        name = f"./{e.path}/" if e.type == "dir" else f"./{e.path}"
        yield Member(name, e.type, e.uid, e.gid, e.mode, e.size, e.target, tuple(e.xattrs))


def _check_whiteouts(entries: list[Entry], bad: set[str], add: Callable[[Refusal], None]) -> None:
    """Whiteouts have the path rules above (a path twice is ``order``); below a non-directory of
    the same entry they are allowed (that entry hides the path anyway, and nothing is written
    for them). Their owner is never used, but must be in range like any other."""
    for e in entries:
        if e.type == "whiteout" and e.path not in bad and not (0 <= e.uid <= MAX_ID and 0 <= e.gid <= MAX_ID):
            add(Refusal(e.path, "id-range", f"owner {e.uid}:{e.gid} is outside 0..{MAX_ID}"))
