"""What the Debian builders share: checks, the installed package set, and building a layer as
the difference a program makes to a chroot of the stack below."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from .. import hermetic, snapshots
from ..debian.chroot import Bind, Chroot, terminate_as_exit
from ..debian.deb822 import paragraphs
from ..debian.normalise import normalise
from ..definitions import rel
from ..digest import digest
from ..errors import BuildError
from ..lock.model import Artifact
from ..manifest import Entry, diff, sorted_entries
from ..overlay import OverlayUnavailable, StackMount
from ..scan import scan_dir
from ..snapshots import upper_changes
from .context import Context

# Contents of these folders are made at run time (kernel file systems, /dev by LXC) and are
# never part of a layer; the folders themselves are.
RUNTIME_DIRS = ("dev", "proc", "sys")
# A marker beside workdir/root: the folder holds exactly the stack below.
PRISTINE = "root.pristine"


def shown(ctx: Context) -> str:
    return rel(ctx.layer.file, ctx.project.root)


def require_root(ctx: Context, what: str) -> None:
    if os.geteuid() != 0:
        raise BuildError(f"building a {ctx.layer.kind} layer needs root ({what}); run lxclayer as root",
                         file=shown(ctx))


def require_tool(ctx: Context, tool: str, package: str) -> str:
    path = shutil.which(tool) or next(
        (p for d in ("/usr/sbin", "/sbin", "/usr/bin") if os.path.exists(p := f"{d}/{tool}")), None)
    if path is None:
        raise BuildError(f"{tool} is not installed on this host (apt-get install {package})", file=shown(ctx))
    return path


def kept(path: str) -> bool:
    head, _, rest = path.partition("/")
    return not (rest and head in RUNTIME_DIRS)


def layer_tree(entries: dict[str, Entry]) -> dict[str, Entry]:
    """Entries as layers compare them: no run-time folder contents, no implicit flags."""
    out = {}
    for p, e in entries.items():
        if not kept(p):
            continue
        if e.implicit:
            e = msgspec.structs.replace(e, implicit=False)
        out[p] = e
    return out


# --- the installed package set ------------------------------------------------------------------


def installed(root: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, arch) of the packages dpkg says are installed in `root`."""
    admindir = root / "var/lib/dpkg"
    try:
        p = hermetic.run(
            ["dpkg-query", f"--admindir={admindir}", "-W",
             "-f=${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n"],
            capture_output=True, text=True,
        )
    except FileNotFoundError:
        return installed_from_status((admindir / "status").read_text())
    if p.returncode != 0:
        raise BuildError(f"dpkg-query failed: {p.stderr.strip().splitlines()[-1:] or p.returncode}")
    out = {}
    for line in p.stdout.splitlines():
        abbrev, name, version, arch = line.split("\t")
        if abbrev.startswith("ii"):
            out[name] = (version, arch)
    return out


def installed_from_status(text: str) -> dict[str, tuple[str, str]]:
    out = {}
    for p in paragraphs(text):
        if p.get("Status", "").endswith(" installed") and p.get("Status", "").startswith("install"):
            out[p["Package"]] = (p.get("Version", ""), p.get("Architecture", ""))
    return out


def lower_text(ctx: Context, path: str) -> str:
    """The text of a file of the stack below ("" if there is none)."""
    e = ctx.lower_file(path)
    if e is None or e.type != "file":
        return ""
    return ctx.store.read_blob(e.hash).decode("utf-8", "replace")


def lower_status(ctx: Context) -> str:
    return lower_text(ctx, "var/lib/dpkg/status")


def check_installed(ctx: Context, have: dict[str, tuple[str, str]], pins: dict[str, Artifact],
                    before: dict[str, tuple[str, str]] | None = None) -> None:
    """The installed set must be `before` (the stack below) changed by exactly the pins."""
    want = dict(before or {})
    for a in pins.values():
        want[a.name] = (a.version, a.arch)
    problems = []
    for name, (ver, _arch) in sorted(want.items()):
        got = have.get(name)
        if got is None:
            if before is not None and name in before and name not in pins:
                continue  # removed by the installation (a Conflicts); reported below
            problems.append(f"{name} {ver} is pinned but not installed")
        elif got[0] != ver:
            problems.append(f"{name} is installed in version {got[0]}, pinned {ver}")
    for name in sorted(set(have) - set(want)):
        problems.append(f"{name} {have[name][0]} is installed but not pinned")
    if problems:
        raise BuildError(
            "the installed packages differ from the lock: " + "; ".join(problems[:5])
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
            + "; re-resolve with `lxclayer lock`",
            file=shown(ctx), key="packages",
        )
    if before is not None:
        gone = sorted(set(before) - set(have))
        if gone:
            ctx.log(f"removed by the installation: {', '.join(gone)}")


# --- a layer as the difference a program makes ---------------------------------------------------


def build_in_chroot(
    ctx: Context,
    work: Callable[[Chroot], None],
    *,
    binds: list[Bind] | None = None,
) -> list[Entry]:
    """Run `work` in a chroot of the stack below, normalise, and return the difference to the
    stack below (changed and added entries, whiteouts).

    On snapshots (the default): the chroot is an overlay of the snapshots of the layers below
    with a new upper directory, and the difference is read from that directory alone. Otherwise
    (``--snapshots=off``, or no overlayfs here): the stack below is materialised into a folder
    and the whole result is scanned."""
    if not ctx.below:
        raise BuildError(f"a {ctx.layer.kind} layer needs a Debian root file system below it",
                         file=shown(ctx))
    pristine = ctx.workdir / PRISTINE
    if not pristine.exists() and ctx.snapshots.enabled:
        try:
            with on_snapshots(ctx, "build") as mount:
                base = layer_tree({e.path: e for e in ctx.lower_tree()})
                with chroot_on(ctx, mount, binds or []) as ch:
                    work(ch)
                normalise(mount.view, source_date_epoch=ctx.source_date_epoch, log=ctx.log,
                          pycs_under=mount.upper)
            new = layer_tree(upper_changes(mount.upper, base, ctx.store, mtime_clamp=ctx.source_date_epoch))
            entries = sorted_entries(diff(base, new))
            keep_as_snapshot(ctx, entries, mount.upper)
            return entries
        except OverlayUnavailable as e:
            ctx.snapshots.off(f"overlayfs cannot be mounted here: {e}")
    ctx.snapshots.tell()
    root = ctx.workdir / "root"
    if pristine.exists():  # materialised by resolve(), which left it untouched (see Chroot.overlay)
        pristine.unlink()
        base = layer_tree({e.path: e for e in ctx.lower_tree()})
    else:
        ctx.log("materialising the layers below")
        base = layer_tree(ctx.materialise_below(root))
    ch = Chroot(root, ctx.workdir, binds or [], log=ctx.log, source_date_epoch=ctx.source_date_epoch)
    try:
        with terminate_as_exit(), ch:
            work(ch)
    finally:
        ctx.program_seconds += ch.seconds
    normalise(root, source_date_epoch=ctx.source_date_epoch, log=ctx.log)
    new = layer_tree(scan_dir(root, ctx.store, mtime_clamp=ctx.source_date_epoch))
    return sorted_entries(diff(base, new))


def keep_as_snapshot(ctx: Context, entries: list[Entry], tree: Path) -> None:
    """Move `tree` (an upper directory, or a whole root file system for a base layer) into
    place as the new layer's snapshot, so that no layer above has to make it from the store."""
    if not ctx.input or not ctx.snapshots.enabled:
        return
    t = time.monotonic()
    try:
        snapshots.adopt(ctx.store, ctx.input, digest(entries), tree, mtime=ctx.source_date_epoch)
        ctx.log(f"kept as its snapshot ({time.monotonic() - t:.1f} s)")
    except OSError as e:  # made from the store entry when needed
        ctx.log(f"not kept as its snapshot: {e.strerror or e}")


def snapshot_lowers(ctx: Context) -> list[Path]:
    """The verified snapshots of the layers below, top first (each made or made again from its
    store entry when missing or changed)."""
    stack = [e.entries for e in ctx.below]
    roots = []
    for i, entry in enumerate(ctx.below):
        roots.append(snapshots.ensure(
            ctx.store, entry.input, entry.output, lambda e=entry: e.entries,
            functools.partial(snapshots.lookup_below, stack[:i]), mtime=ctx.source_date_epoch, log=ctx.log,
            checked=ctx.snapshots.checked))
    return roots[::-1]


@contextlib.contextmanager
def on_snapshots(ctx: Context, tag: str) -> Iterator[StackMount]:
    """An overlay of the snapshots below with a new upper directory in `<workdir>/<tag>/`,
    mounted only in a private namespace and gone afterwards. OverlayUnavailable if it cannot be
    mounted here."""
    t = time.monotonic()
    lowers = snapshot_lowers(ctx)
    d = ctx.workdir / tag
    d.mkdir()
    mount = StackMount(snapshots.snapshots_dir(ctx.store), lowers, d / "upper", d / "work", d / "root")
    with terminate_as_exit(), mount:
        ctx.log(f"on {len(lowers)} snapshots ({time.monotonic() - t:.1f} s to check or make them)")
        yield mount


@contextlib.contextmanager
def chroot_on(ctx: Context, mount: StackMount, binds: list[Bind]) -> Iterator[Chroot]:
    """A Chroot of the merged tree of `mount`; its programs' time is added to the layer's."""
    ch = Chroot(mount.view, mount.upper.parent, binds, log=ctx.log, source_date_epoch=ctx.source_date_epoch,
                enter=mount.enter, run_root=mount.mountpoint)
    try:
        with ch:
            yield ch
    finally:
        ctx.program_seconds += ch.seconds


def scan_base(ctx: Context, root: Path) -> list[Entry]:
    return sorted_entries(layer_tree(scan_dir(root, ctx.store, mtime_clamp=ctx.source_date_epoch)).values())
