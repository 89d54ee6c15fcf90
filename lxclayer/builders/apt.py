"""`kind = "apt"`: Debian packages installed on top of the layers below.

Resolution: the stack below is materialised, the layer's extra sources and their pinned keys
are written into it, and apt *inside that chroot* (the container's own apt, configuration,
sources and dpkg status) fetches the indices and simulates installing `packages`. Every .deb it
would install or upgrade is pinned with the sha256, pool path and size of the Packages index.

Building: the pinned .debs come from the store (downloaded once, checked by sha256), are
bind-mounted read-only into a chroot of the stack below, and apt installs exactly those files,
with no network (the chroot has its own empty network namespace) and with a policy-rc.d that
stops any service from starting. dpkg-query then checks the installed set against the pins.
The layer is what changed: added and changed paths, and whiteouts for removed ones.

Extra sources (a vendor's repository) need a signing key beside layer.toml, pinned by its
sha256 (`key_sha256`) or its OpenPGP fingerprint (`key_fingerprint`, checked with gpg); a key
that does not match is refused before anything runs, and apt refuses indices not signed by it.
The source and the key stay in the layer (/etc/apt/sources.list.d/, /etc/apt/keyrings/) so that
the container can update from the same repository later.
"""

import os
import shutil
from pathlib import Path

from ..artifacts import places_for
from ..debian.apt import (
    apt_failure,
    deb_filename,
    parse_simulation,
    parse_sources,
    update_failure,
)
from ..debian.chroot import OVERLAY_UNAVAILABLE, Bind, Chroot
from ..debian.deb822 import paragraphs
from ..debian.fetch import deb_urls, fetch_all, link_or_copy
from ..debian.normalise import normalise
from ..errors import BuildError
from ..kinds.apt import (  # noqa: F401 (what the engine asks a builder for)
    COMPONENT_RE,
    FPR_RE,
    SHA256_RE,
    SUITE_RE,
    Settings,
    Source,
    check_key,
    gpg_fingerprints,
    validate,
)
from ..lock.model import Artifact
from ..overlay import OverlayUnavailable
from ..realise.context import Artifacts, Context, Result
from ..realise.program import (
    PRISTINE,
    build_in_chroot,
    check_installed,
    chroot_on,
    installed,
    lower_text,
    on_snapshots,
    require_root,
    require_tool,
    shown,
)

KIND = "apt"

DEBS_INSIDE = "/run/lxclayer/debs"


def _source_files(ctx: Context) -> dict[str, tuple[bytes, int]]:
    """Container path -> (content, mode) of the sources.list and keys this layer adds."""
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    if not s.sources:
        return {}
    out: dict[str, tuple[bytes, int]] = {}
    lines = []
    for i, src in enumerate(s.sources):
        data = check_key(ctx.layer, i, shown(ctx))
        ext = "asc" if data.lstrip().startswith(b"-----BEGIN PGP") else "gpg"
        key_path = f"etc/apt/keyrings/{ctx.layer.name}-{i}.{ext}"
        out[key_path] = (data, 0o644)
        comps = "" if src.suite.endswith("/") else " " + " ".join(src.components)
        lines.append(f"deb [signed-by=/{key_path}] {src.uri} {src.suite}{comps}\n")
    out[f"etc/apt/sources.list.d/{ctx.layer.name}.list"] = ("".join(lines).encode(), 0o644)
    return out


def _write_sources(ctx: Context, root: Path) -> None:
    for path, (data, mode) in _source_files(ctx).items():
        p = root / path
        if not p.parent.exists():
            p.parent.mkdir(parents=True, mode=0o755)
        p.write_bytes(data)
        os.chmod(p, mode)


def _apt_opts(s: Settings) -> list[str]:
    return [
        "-o", f"APT::Install-Recommends={'true' if s.recommends else 'false'}",
        "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
    ]


# --- resolution ---------------------------------------------------------------------------------


def resolve(ctx: Context) -> Artifacts:
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    if ctx.offline:
        raise BuildError("resolving packages needs the network, and --offline is set "
                         "(build with the lockfile, or without --offline)", file=shown(ctx))
    if not s.packages:
        return {"packages": {}}
    require_root(ctx, "apt resolves in a chroot of the layers below")
    require_tool(ctx, "unshare", "util-linux")
    if not ctx.below:
        raise BuildError("an apt layer needs a Debian root file system below it", file=shown(ctx))
    found = None
    if ctx.snapshots.enabled:  # on an overlay of the snapshots below, thrown away afterwards
        try:
            with on_snapshots(ctx, "resolve") as mount:
                _write_sources(ctx, mount.view)
                with chroot_on(ctx, mount, []) as ch:
                    found = _resolve_with(ctx, ch, overlay=False)
            shutil.rmtree(mount.upper.parent, ignore_errors=True)
        except OverlayUnavailable as e:
            ctx.snapshots.off(f"overlayfs cannot be mounted here: {e}")
    if found is None:
        found = _resolve_materialised(ctx)
    inst, stanzas = found
    pinned: dict[str, Artifact] = {}
    for name, version, arch in inst:
        p = stanzas.get((name, version, arch)) or stanzas.get((name, version, "all"))
        if p is None or "SHA256" not in p:
            raise BuildError(f"{name} {version} ({arch}) has no SHA256 in the Packages index", file=shown(ctx))
        pinned[name] = Artifact(name=name, version=version, arch=arch, sha256=p["SHA256"],
                                source=p["Filename"], size=int(p.get("Size", "0") or 0))
    ctx.log(f"resolved {len(pinned)} packages")
    return {"packages": dict(sorted(pinned.items()))}


def _resolve_materialised(ctx: Context):
    ctx.snapshots.tell()
    # Resolve in the tree the build will use, seen through an overlay so that it stays as it
    # is; where overlayfs is missing, in a copy of its own.
    root = ctx.workdir / "root"
    if not root.exists():
        ctx.log("materialising the layers below")
        ctx.materialise_below(root)
        (ctx.workdir / PRISTINE).touch()
    overlay = ctx.workdir / "resolve-overlay"
    try:
        found = _resolve_in(ctx, root, overlay)
    finally:
        shutil.rmtree(overlay, ignore_errors=True)
    if found is None:
        copy = ctx.workdir / "resolve-root"
        ctx.log("materialising the layers below (to resolve; no overlayfs here)")
        ctx.materialise_below(copy)
        try:
            _write_sources(ctx, copy)
            found = _resolve_in(ctx, copy, None)
        finally:
            shutil.rmtree(copy, ignore_errors=True)
    assert found is not None
    return found


def _resolve_in(ctx: Context, root: Path, overlay: Path | None):
    """(Inst list, stanzas) from apt in a chroot of `root`; None if the overlay cannot be made."""
    if overlay is not None:
        _write_sources(ctx, overlay / "upper")
    ch = Chroot(root, ctx.workdir, log=ctx.log, overlay=overlay)
    try:
        with ch:
            return _resolve_with(ctx, ch, overlay=overlay is not None)
    finally:
        ctx.program_seconds += ch.seconds


# What apt's view of its sources depends on: a cache of its lists is only used for the same.
_APT_STATE = ("etc/apt/sources.list", "etc/apt/sources.list.d", "etc/apt/trusted.gpg", "etc/apt/trusted.gpg.d",
              "etc/apt/keyrings", "etc/apt/apt.conf.d", "etc/apt/preferences", "etc/apt/preferences.d",
              "usr/share/keyrings", "var/lib/dpkg/arch")
LISTS = "var/lib/apt/lists"


def _lists_key(root: Path) -> str:
    """A digest of the sources, keys and configuration apt reads in `root`."""
    import hashlib

    h = hashlib.sha256()
    for rel in _APT_STATE:
        p = root / rel
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p] if p.is_file() else []
        for q in files:
            h.update(q.relative_to(root).as_posix().encode() + b"\0" + q.read_bytes() + b"\0")
    return h.hexdigest()[:32]


def _lists_cache(ctx: Context) -> Path:
    return ctx.store.snapshots_dir() / ".apt-lists"


def _lists_in(ctx: Context, root: Path) -> Path:
    """Put the lists a former resolve of the same sources fetched into `root` (apt then asks the
    mirror only whether they changed: its If-Modified-Since, checked against the signed
    InRelease as always); the cache folder (where the lists are kept afterwards)."""
    cache = _lists_cache(ctx) / _lists_key(root)
    if not (cache / "lists").is_dir():
        return cache
    why = _lists_damage(cache / "lists")
    if why:
        ctx.log(f"apt lists not reused ({why})")
        return cache
    try:
        shutil.copytree(cache / "lists", root / LISTS, dirs_exist_ok=True, symlinks=True)
    except (OSError, shutil.Error) as e:
        ctx.log(f"apt lists not reused: {e}")
    return cache


def _lists_damage(lists: Path) -> str | None:
    """Why the kept lists are not what their InRelease lists (None if every index is): each
    index file against the SHA256 its suite's InRelease gives it, as apt fetched them."""
    import hashlib

    from ..debian.deb822 import paragraphs

    files = {q.name: q for q in lists.iterdir() if q.is_file()}
    releases = [n for n in files if n.endswith("_InRelease")]
    if not releases:
        return "no InRelease"
    for n, q in files.items():
        if n.endswith(("_InRelease", "_Release", "_Release.gpg")):
            continue
        rel = max((r for r in releases if n.startswith(r[: -len("InRelease")])), key=len, default=None)
        if rel is None:
            return f"{n} belongs to no InRelease"
        text = files[rel].read_text("utf-8", "replace")
        body = next(iter(paragraphs(text.split("\n\n", 1)[-1] if text.startswith("-----BEGIN") else text)), {})
        want = {}
        for line in body.get("SHA256", "").splitlines():
            parts = line.split()
            if len(parts) == 3:
                want[parts[2].replace("/", "_")] = parts[0]
        name = n[len(rel) - len("InRelease"):]
        if want.get(name) != hashlib.sha256(q.read_bytes()).hexdigest():
            return f"{n} does not match its InRelease"
    return None


def _lists_out(ctx: Context, root: Path, cache: Path) -> None:
    """Keep the lists apt has now for the next resolve of the same sources (replaced whole)."""
    base = cache.parent
    tmp = base / f".tmp-{os.getpid()}-{cache.name}"
    old = base / f".old-{os.getpid()}-{cache.name}"
    try:
        base.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(root / LISTS, tmp / "lists", symlinks=True,
                        ignore=lambda d, names: [n for n in names if n in ("lock", "partial")])
        if cache.exists():
            os.rename(cache, old)
        os.rename(tmp, cache)
    except (OSError, shutil.Error) as e:
        ctx.log(f"apt lists not kept: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _resolve_with(ctx: Context, ch: Chroot, *, overlay: bool):
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    # (Not where apt writes through an overlay of its own onto a tree the build uses next: the
    # lists are read and kept from the tree itself.)
    cache = None if overlay else _lists_in(ctx, ch.root)
    # Without the Translation-* indices (a third of what trixie's update downloads, and parsed
    # into apt's cache): descriptions are not pins; the indices pins come from are the same.
    out = ch.run(["apt-get", "--error-on=any", "-o", "Acquire::Languages=none", "update"], network=True,
                 what="update")
    if overlay and out.returncode == 97 and OVERLAY_UNAVAILABLE in out.text:
        return None
    failure = update_failure(out.text)
    if out.returncode != 0 or failure:
        raise BuildError(failure or apt_failure(out.text), file=shown(ctx), key="sources" if s.sources else None)
    if cache is not None:
        _lists_out(ctx, ch.root, cache)
    out = ch.run(["apt-get", "-s", "-y", *_apt_opts(s), "install", *s.packages], what="simulate")
    if out.returncode != 0:
        raise BuildError(apt_failure(out.text), file=shown(ctx), key="packages")
    inst = parse_simulation(out.full_text())
    if not inst:
        return [], {}
    out = ch.run(["apt-cache", "show", *(f"{n}={v}" for n, v, _ in inst)], what="show")
    if out.returncode != 0:
        raise BuildError(apt_failure(out.text), file=shown(ctx), key="packages")
    return inst, _stanzas(out.full_text())


def _stanzas(text: str) -> dict[tuple[str, str, str], dict[str, str]]:
    out: dict[tuple[str, str, str], dict[str, str]] = {}
    for p in paragraphs(text):
        if "Package" in p and "Version" in p:
            out.setdefault((p["Package"], p["Version"], p.get("Architecture", "")), p)
    return out


# --- building -----------------------------------------------------------------------------------


def _bases(ctx: Context) -> list[str]:
    """Archive URLs to fetch pinned .debs from: the sources below, then the layer's own."""
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    bases: list[str] = []
    for e in ctx.lower_tree():
        if e.type != "file":
            continue
        if e.path == "etc/apt/sources.list" or (e.path.startswith("etc/apt/sources.list.d/")
                                                and e.path.endswith((".list", ".sources"))):
            text = ctx.store.read_blob(e.hash).decode("utf-8", "replace")
            for src in parse_sources(text, deb822=e.path.endswith(".sources")):
                bases.append(src.uri.rstrip("/"))
    bases += [src.uri.rstrip("/") for src in s.sources]
    return list(dict.fromkeys(bases))


def _auto_before(ctx: Context) -> set[str]:
    text = lower_text(ctx, "var/lib/apt/extended_states")
    return {p["Package"] for p in paragraphs(text) if p.get("Auto-Installed") == "1"}


def realise(ctx: Context) -> Result:
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    require_root(ctx, "it installs packages in a chroot")
    require_tool(ctx, "unshare", "util-linux")
    pinned: dict[str, Artifact] = dict(ctx.artifacts.get("packages") or {})
    if not pinned and s.packages and "packages" not in ctx.artifacts and not ctx.locked:
        pinned = resolve(ctx)["packages"]
    # (No pins at all is right when every package is installed below already; that is checked
    # after the installation like everything else.)
    debs = ctx.workdir / "debs"
    debs.mkdir()
    if pinned:
        places = places_for(ctx)  # the archives, then the project's [artifacts] fallbacks
        bases = _bases(ctx)  # (reads the whole stack below: once, not once per package)
        paths = fetch_all(
            ctx.store,
            [(a, f"{a.name} {a.version} ({a.arch})", places(a, deb_urls(a, bases))) for a in pinned.values()],
            ctx.workdir / "download", offline=ctx.offline, log=ctx.log, file=shown(ctx), key="packages",
        )
        for a in pinned.values():
            link_or_copy(paths[a.sha256], debs / deb_filename(a))
    auto_before = _auto_before(ctx)

    def work(ch: Chroot) -> None:
        root = ch.root
        _write_sources(ctx, root)
        before = installed(root)
        if pinned:
            files = [f"{DEBS_INSIDE}/{deb_filename(a)}" for a in pinned.values()]
            ctx.log(f"installing {len(files)} packages")
            out = ch.run(["apt-get", "install", "-y", *_apt_opts(s),
                          "-o", "Dpkg::Options::=--force-unsafe-io", *files], what="install")
            if out.returncode != 0:
                raise BuildError(f"apt-get install failed: {apt_failure(out.text)}", file=shown(ctx), key="packages")
            # apt marks what it was given by path as installed by hand; dependencies are not.
            auto = sorted(n for n in pinned if n not in s.packages and (n not in before or n in auto_before))
            if auto:
                out = ch.run(["apt-mark", "auto", *auto], what="mark")
                if out.returncode != 0:
                    raise BuildError(f"apt-mark failed: {apt_failure(out.text)}", file=shown(ctx))
        have = installed(root)
        check_installed(ctx, have, pinned, before)
        missing = [p for p in s.packages if p not in have]
        if missing:
            raise BuildError(f"package {missing[0]!r} is not installed and not pinned; re-resolve with `lxclayer lock`",
                             file=shown(ctx), key="packages")

    entries = build_in_chroot(ctx, work, binds=[Bind(debs, DEBS_INSIDE)])
    return Result(entries=entries, artifacts={"packages": pinned})


_ = normalise  # applied by build_in_chroot
