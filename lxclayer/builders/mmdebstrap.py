"""`kind = "mmdebstrap"`: a Debian root file system, made by mmdebstrap from pinned .debs.

Resolution (`resolve`, i.e. `lxclayer lock` or a build without pins): apt on the host, with a
private configuration, fetches the signed indices of the mirrors and simulates installing the
variant's package set plus `packages` into an empty system, exactly as mmdebstrap would. Every
.deb of the result is pinned: name, version, architecture, the sha256 and pool path of the
archive's Packages index, and its size.

Building (`realise`): the pinned .debs are fetched into the store (or found there, checked by
sha256), laid out as a flat repository holding nothing else, and mmdebstrap builds from that
repository alone, so it installs exactly the pins without touching the network. The installed
set is checked against the pins with dpkg-query. Then the mirrors are written to
/etc/apt/sources.list, the tree is normalised (see :mod:`lxclayer.debian.normalise`) and read.
"""

import os
import shlex
import shutil
import time
from functools import cache
from pathlib import Path

from .. import hermetic
from ..artifacts import places_for
from ..debian.apt import (
    KEYRING,
    VARIANTS,
    HostApt,
    SourceLine,
    parse_source_line,
    pins,
    variant_names,
)
from ..debian.chroot import run_isolated, sweep, terminate_as_exit
from ..debian.fetch import deb_urls, fetch_all
from ..debian.normalise import normalise
from ..debian.repo import make_repo
from ..errors import BuildError
from ..kinds.mmdebstrap import COMPONENT_RE, DEFAULT_MIRROR, SUITE_RE, Settings, is_line, validate  # noqa: F401 (what the engine asks a builder for)
from ..lock.model import Artifact
from ..realise.context import Artifacts, Context, Result
from ..realise.program import (
    check_installed,
    installed,
    keep_as_snapshot,
    require_root,
    require_tool,
    scan_base,
    shown,
)

KIND = "mmdebstrap"


def sources(s: Settings) -> list[SourceLine]:
    out = []
    for m in s.mirrors:
        if is_line(m):
            out.append(parse_source_line(m))
        else:
            out.append(SourceLine(uri=m.rstrip("/"), suite=s.suite, components=tuple(s.components)))
    return out


def _host_sources(s: Settings) -> list[str]:
    """The sources for resolving on the host: Debian's keyring unless a line names its own."""
    out = []
    for src in sources(s):
        extra = ["arch={arch}"]
        if "signed-by" not in src.option_names and not src.uri.startswith("file:"):
            extra.append(f"signed-by={KEYRING}")
        out.append(src.line(extra))
    return out


def resolve(ctx: Context) -> Artifacts:
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    if ctx.offline:
        raise BuildError("resolving the package set needs the network, and --offline is set "
                         "(build with the lockfile, or without --offline)", file=shown(ctx))
    require_tool(ctx, "apt-get", "apt")
    lines = [ln.replace("{arch}", ctx.arch) for ln in _host_sources(s)]
    if any(f"signed-by={KEYRING}" in ln for ln in lines) and not os.path.exists(KEYRING):
        raise BuildError(f"{KEYRING} is missing (apt-get install debian-archive-keyring)", file=shown(ctx))
    apt = HostApt(ctx.workdir / "resolve", ctx.arch, lines, log=ctx.log)
    t = time.monotonic()
    ctx.log(f"resolving {s.variant} {s.suite} + {len(s.packages)} packages")
    try:
        apt.update()
    except BuildError as e:
        raise BuildError(e.reason, file=shown(ctx), key="mirrors") from None
    index = apt.index()
    names = variant_names(index, s.suite, s.variant)
    if not names and VARIANTS[s.variant]:
        raise BuildError(f"no Essential packages found for suite {s.suite!r} at {', '.join(s.mirrors)}"
                         " (is the suite name right?)", file=shown(ctx), key="suite")
    for p in s.packages:
        if p not in index.names:
            raise BuildError(f"package {p!r} does not exist in {s.suite} ({' '.join(s.components)})",
                             file=shown(ctx), key="packages")
    try:
        inst = apt.simulate(names | set(s.packages))
    except BuildError as e:
        raise BuildError(e.reason, file=shown(ctx), key="packages") from None
    pinned = pins(inst, index)
    shutil.rmtree(apt.root, ignore_errors=True)  # the indices: ~50 MB per mirror
    ctx.log(f"resolved {len(pinned)} packages in {time.monotonic() - t:.1f} s")
    return {"packages": pinned}


# Host programs whose version shapes the bytes of the tree: mmdebstrap itself, and the host's
# apt (it downloads and orders the installation) and dpkg (dpkg-deb unpacks the Essential set).
HOST_TOOLS = ("mmdebstrap", "dpkg", "apt")


@cache
def host_tool_versions() -> dict[str, str]:
    """Debian package version of each of HOST_TOOLS on this host ("not installed" if absent)."""
    out = {t: "not installed" for t in HOST_TOOLS}
    try:
        p = hermetic.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}\t${Package}\t${Version}\n", *HOST_TOOLS],
                         capture_output=True, text=True)
    except FileNotFoundError:
        return out
    for line in p.stdout.splitlines():
        abbrev, _, rest = line.partition("\t")
        name, _, version = rest.partition("\t")
        if abbrev.startswith("ii") and name in out:
            out[name] = version
    return out


DPKG_STATUS = "/var/lib/dpkg/status"


def kept_host_tool_versions(store) -> dict[str, str]:
    """`host_tool_versions()`, kept in the store's stat cache area while dpkg's database is the
    same file: dpkg replaces /var/lib/dpkg/status (by rename) whenever it installs, removes or
    upgrades a package, so its inode, size, mtime or ctime says when to ask dpkg-query again.
    A no-op build then starts no program (issue 24)."""
    import os

    import msgspec

    from ..fsio import atomic_write

    try:
        st = os.stat(DPKG_STATUS)
    except OSError:
        return host_tool_versions()
    key = ":".join(str(x) for x in (os.uname().nodename, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                    st.st_ctime_ns, *HOST_TOOLS))
    where = store.statcache_path("host-tools")
    try:
        kept = msgspec.msgpack.decode(where.read_bytes(), type=dict[str, dict[str, str]])
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        kept = {}
    if key in kept:
        return kept[key]
    versions = host_tool_versions()
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(where, msgspec.msgpack.encode({key: versions}))
    except OSError:
        pass  # a store that cannot be written to: asked again next time
    return versions


def resolved_inputs(ctx: Context) -> dict[str, str]:
    """The versions of the host tools that build the tree: part of the input digest and the
    lock, so a host with another mmdebstrap, apt or dpkg builds (and names) another input."""
    return {f"tool {name}": version for name, version in kept_host_tool_versions(ctx.store).items()}


def _bases(s: Settings) -> list[str]:
    return [src.uri.rstrip("/") for src in sources(s)]


def fetch_debs(ctx: Context, pinned: dict[str, Artifact], bases: list[str]) -> dict[str, Path]:
    places = places_for(ctx)  # the mirrors, then the project's [artifacts] fallbacks
    items = [(a, f"{a.name} {a.version} ({a.arch})", places(a, deb_urls(a, bases))) for a in pinned.values()]
    return fetch_all(ctx.store, items, ctx.workdir / "download", offline=ctx.offline, log=ctx.log,
                     file=shown(ctx), key="packages")


def realise(ctx: Context) -> Result:
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    require_root(ctx, "mmdebstrap runs in root mode")
    mmdebstrap = require_tool(ctx, "mmdebstrap", "mmdebstrap")
    require_tool(ctx, "unshare", "util-linux")
    pinned = dict(ctx.artifacts.get("packages") or {})
    if not pinned:
        if ctx.locked:
            raise BuildError("the lockfile pins no packages for this layer", file=shown(ctx))
        pinned = resolve(ctx)["packages"]
    missing = [p for p in s.packages if p not in pinned]
    if missing:
        raise BuildError(f"package {missing[0]!r} is not pinned by the lockfile; re-resolve with `lxclayer lock`",
                         file=shown(ctx), key="packages")
    paths = fetch_debs(ctx, pinned, _bases(s))
    sde = ctx.source_date_epoch
    repo = ctx.workdir / "repo"
    make_repo(repo, pinned, paths, suite=s.suite,
              date=time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime(sde)))
    target = ctx.workdir / "rootfs"
    # The repository appears at a fixed place under /run inside the build's private mount
    # namespace (mmdebstrap's file-mirror-automount hook mounts it into the chroot there too,
    # and /run is emptied by the normalisation).
    inside = f"/run/lxclayer-repo-{os.getpid()}-{os.urandom(4).hex()}"
    setup = (f"mkdir -p {inside}\nmount --bind -o ro {shlex.quote(str(repo))} {inside}\n"
             f"mount -o remount,bind,ro {inside}\n")
    argv = [
        mmdebstrap, "--mode=root", "--format=directory", f"--variant={s.variant}",
        f"--architectures={ctx.arch}", "--verbose",
        # Not kept in the result (removed below); dpkg without fsync is much faster.
        "--dpkgopt=force-unsafe-io",
        "--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount",
    ]
    # Every pin is named: the flat repository's Packages index carries each .deb's own
    # Priority, which may differ from the archive's override (apt is "required" in the archive,
    # "important" in its .deb), so the variant alone would not select the same set.
    argv.append("--include=" + ",".join(sorted(pinned)))
    argv += [s.suite, str(target), f"deb [trusted=yes] file://{inside} ./"]
    env = {"SOURCE_DATE_EPOCH": str(sde)}  # added to lxclayer.hermetic's fixed environment
    t = time.monotonic()
    ctx.log(f"mmdebstrap {s.variant} {s.suite}: {len(pinned)} pinned packages")
    try:
        with terminate_as_exit():
            out = run_isolated(setup, argv, env=env, network=False, log=ctx.log,
                               log_file=ctx.workdir / "mmdebstrap.log")
    finally:
        ctx.program_seconds += time.monotonic() - t
        sweep(ctx.workdir, ctx.log)
        try:
            os.rmdir(inside)
        except OSError:
            pass
    if out.returncode != 0:
        raise BuildError(f"mmdebstrap failed: {_mmdebstrap_reason(out.tail)}", file=shown(ctx))
    ctx.log(f"mmdebstrap took {time.monotonic() - t:.1f} s")
    have = installed(target)
    check_installed(ctx, have, pinned)
    for leftover in ("etc/dpkg/dpkg.cfg.d/99mmdebstrap", "etc/apt/apt.conf.d/99mmdebstrap"):
        (target / leftover).unlink(missing_ok=True)
    lines = [src.line() for src in sources(s)]
    (target / "etc/apt/sources.list").write_text("".join(ln + "\n" for ln in lines))
    normalise(target, source_date_epoch=sde, log=ctx.log, base=True)
    entries = scan_base(ctx, target)
    keep_as_snapshot(ctx, entries, target)
    return Result(entries=entries, artifacts={"packages": pinned})


def _mmdebstrap_reason(tail: list[str]) -> str:
    from ..debian.apt import apt_failure

    errs = [ln for ln in tail if ln.startswith("E: ")]
    if errs:
        text = "\n".join(tail)
        reason = apt_failure(text)
        return reason if reason != "apt failed" else errs[-1][3:]
    lines = [ln for ln in tail if ln.strip()]
    return lines[-1] if lines else "no output"
