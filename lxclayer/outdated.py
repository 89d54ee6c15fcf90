"""`lxclayer outdated`: which pins of a lock have a newer version at their source today.

For a template, the Debian sources its layers use (an mmdebstrap layer's mirrors, an apt layer's
extra sources) are fetched with apt on the host, under a private configuration and checked
against their signing keys, exactly as resolution fetches them; for a Debian release suite on
a `/debian` archive its `-updates` suite and the security archive's `-security` suite are
added when the layer does not list them. Every pinned .deb is compared with the newest version
of the same package (and architecture) in those indices, and what is newer is reported once per
**source package**, as Debian's advisories are written: locked -> available, the pocket the
newer version comes from (`security`: a `-security` suite; `updates`: a `-updates` suite;
`release`: any other), the binary packages and the layers that pin it. Wheels are compared with
the newest final release on the index their layer locks from (pocket `index`).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from .errors import BuildError, UserError
from .lock.model import Artifact, Lockfile

POCKETS = ("security", "updates", "release", "index")
INDEX_FIELDS = ("Package", "Version", "Architecture", "Source", "Filename", "SHA256", "Size")


class Outdated(msgspec.Struct, kw_only=True):
    """One source package (or wheel project) of one template with a newer version."""

    template: str
    source: str
    packages: list[str]
    locked: str
    available: str
    pocket: str  # one of POCKETS
    layers: list[str]


class Report(msgspec.Struct, kw_only=True):
    outdated: list[Outdated]


def pocket_of(suite: str) -> str:
    if suite.endswith("-security") or suite.endswith("/updates"):
        return "security"
    if suite.endswith("-updates"):
        return "updates"
    return "release"


# --- the sources of a template ---------------------------------------------------------------


def _derived(line) -> list:
    """The `-updates` and `-security` companions of a Debian release suite on `.../debian`."""
    from .debian.apt import SourceLine

    if line.flat or "-" in line.suite or not line.uri.rstrip("/").endswith("/debian"):
        return []
    base = line.uri.rstrip("/")
    return [SourceLine(uri=base, suite=f"{line.suite}-updates", components=line.components, options=line.options),
            SourceLine(uri=base + "-security", suite=f"{line.suite}-security", components=line.components,
                       options=line.options)]


def template_sources(project) -> list[str]:
    """The apt source lines (for apt on the host) of every Debian source the template's layers use."""
    from .builders import mmdebstrap
    from .debian.apt import KEYRING, SourceLine
    from .kinds.apt import key_path

    lines: list[SourceLine] = []
    for layer in project.layers:
        s = layer.spec
        if layer.kind == "mmdebstrap":
            lines += mmdebstrap.sources(s)
        elif layer.kind == "apt":
            for i, src in enumerate(s.sources):
                key = key_path(layer, src, str(layer.file), f"sources[{i}].key")
                lines.append(SourceLine(uri=src.uri.rstrip("/"), suite=src.suite,
                                        components=() if src.suite.endswith("/") else tuple(src.components),
                                        options=(f"signed-by={key}",)))
    have = {(ln.uri.rstrip("/"), ln.suite) for ln in lines}
    for ln in list(lines):
        for extra in _derived(ln):
            if (extra.uri, extra.suite) not in have and not any(s.endswith(extra.suite) for _, s in have):
                lines.append(extra)
                have.add((extra.uri, extra.suite))
    out = []
    arch = project.template.arch
    for ln in lines:
        extra = [f"arch={arch}"]
        if "signed-by" not in ln.option_names and not ln.uri.startswith("file:"):
            extra.append(f"signed-by={KEYRING}")
        out.append(ln.line(extra))
    return list(dict.fromkeys(out))


# --- the indices ------------------------------------------------------------------------------


@dataclass
class Candidates:
    """Per (package, arch): every (version, suite, paragraph) the fetched indices offer."""

    by_name: dict[str, list[tuple[str, str, dict[str, str]]]] = field(default_factory=dict)

    def add(self, suite: str, text: str) -> None:
        from .debian.apt import scan_index

        for p in scan_index(text, INDEX_FIELDS):
            self.by_name.setdefault(p["Package"], []).append((p.get("Version", ""), suite, p))

    def newest(self, name: str, arch: str, *, pockets: tuple[str, ...] | None = None):
        """(version, suite, paragraph) of the newest version of `name` for `arch` (or `all`);
        of a security pocket first among equal versions."""
        from .debian.version import compare

        best = None
        for v, suite, p in self.by_name.get(name, []):
            if p.get("Architecture") not in (arch, "all"):
                continue
            if pockets is not None and pocket_of(suite) not in pockets:
                continue
            if best is None:
                best = (v, suite, p)
                continue
            c = compare(v, best[0])
            if c > 0 or (c == 0 and pocket_of(suite) == "security" and pocket_of(best[1]) != "security"):
                best = (v, suite, p)
        return best


def fetch_indices(lines: list[str], arch: str, *, log: Callable[[str], None] = lambda m: None) -> Candidates:
    """The Packages indices of `lines`, fetched and verified by apt on the host."""
    from . import hermetic
    from .debian.apt import HostApt

    if shutil.which("apt-get") is None:
        raise BuildError("apt-get is not installed on this host (lxclayer runs on Debian)")
    with tempfile.TemporaryDirectory(prefix="lxclayer-outdated-") as tmp:
        apt = HostApt(Path(tmp), arch, lines, log=log)
        apt.update()
        out = Candidates()
        for release, filename in apt.index_files():
            text = hermetic.run(["/usr/lib/apt/apt-helper", "cat-file", filename], env=apt.env(),
                                capture_output=True, check=True).stdout.decode("utf-8", "replace")
            out.add(release, text)
    return out


# --- comparing -----------------------------------------------------------------------------------


def source_name(p: dict[str, str], fallback: str) -> str:
    src = p.get("Source", "").strip()
    return src.split()[0] if src else fallback


def source_from_path(a: Artifact) -> str:
    """The source package a Debian pool path names (`pool/main/o/openssl/x.deb` -> openssl)."""
    parts = a.source.split("/")
    return parts[-2] if len(parts) >= 3 and parts[0] == "pool" else a.name


def debs_outdated(template: str, lock: Lockfile, cands: Candidates, *, security_only: bool) -> list[Outdated]:
    """Newer versions of the lock's .debs, one entry per (source package, locked, available, pocket)."""
    from .debian.version import compare

    groups: dict[tuple[str, str, str, str], Outdated] = {}
    for lname, layer in lock.layers.items():
        for a in (layer.artifacts.get("packages") or {}).values():
            best = cands.newest(a.name, a.arch, pockets=("security",) if security_only else None)
            if best is None or compare(best[0], a.version) <= 0:
                continue
            version, suite, para = best
            src = source_name(para, source_from_path(a))
            k = (src, a.version, version, pocket_of(suite))
            o = groups.get(k)
            if o is None:
                o = groups[k] = Outdated(template=template, source=src, packages=[], locked=a.version,
                                         available=version, pocket=pocket_of(suite), layers=[])
            if a.name not in o.packages:
                o.packages.append(a.name)
            if lname not in o.layers:
                o.layers.append(lname)
    for o in groups.values():
        o.packages.sort()
    return sorted(groups.values(), key=lambda o: (o.source, o.locked))


_FINAL = re.compile(r"^(\d+(?:\.\d+)*)(?:\.?post(\d+))?$")


def _release_key(v: str) -> tuple | None:
    """A sort key for a final PEP 440 release (`1.2.3`, `1.2.post1`); None for pre/dev releases."""
    m = _FINAL.match(v.lower().removeprefix("v"))
    if not m:
        return None
    nums = [int(x) for x in m.group(1).split(".")]
    while len(nums) > 1 and nums[-1] == 0:
        nums.pop()
    return (tuple(nums), int(m.group(2) or -1))


def index_versions(index_url: str, name: str) -> list[str]:
    """The versions of project `name` on a PEP 691 simple index (PEP 700 `versions`, or the
    versions in its file names), yanked files left out."""
    from . import download
    from .debian.wheels import SIMPLE_JSON, normalise_name

    url = f"{index_url.rstrip('/')}/{normalise_name(name)}/"
    try:
        body, _ = download.read([url], headers={"Accept": SIMPLE_JSON})
        data = json.loads(body)
    except download.DownloadError as e:
        raise BuildError(f"cannot read the package index: {e.reason}") from None
    except ValueError:
        raise BuildError(f"cannot read {download.redact(url)}: not JSON") from None
    want = normalise_name(name)
    versions: set[str] = set()
    for f in data.get("files", []):
        fn = f.get("filename", "")
        if f.get("yanked"):
            continue
        if fn.endswith(".whl"):
            project, version = (fn[:-4].split("-") + [""])[:2]
        else:
            m = re.match(r"^(.+)-([^-]+)\.(?:tar\.gz|zip|tar\.bz2)$", fn)
            if not m:
                continue
            project, version = m.groups()
        if normalise_name(project) == want and version:
            versions.add(version)
    return sorted(versions)


def wheels_outdated(template: str, project, lock: Lockfile,
                    versions: Callable[[str, str], list[str]] = index_versions) -> list[Outdated]:
    """Newer final releases of the lock's wheels on the index each uv layer locks from."""
    groups: dict[tuple[str, str, str], Outdated] = {}
    asked: dict[tuple[str, str], str | None] = {}
    by_name = {layer.name: layer for layer in project.layers}
    for lname, layer in lock.layers.items():
        spec = getattr(by_name.get(lname), "spec", None)
        index_url = getattr(spec, "index_url", None)
        if not index_url:
            continue
        for a in (layer.artifacts.get("wheels") or {}).values():
            if not a.version or _release_key(a.version) is None:
                continue
            k = (index_url, a.name)
            if k not in asked:
                keyed = [(rk, v) for v in versions(index_url, a.name) if (rk := _release_key(v)) is not None]
                asked[k] = max(keyed)[1] if keyed else None
            newest = asked[k]
            if newest is None or _release_key(newest) <= _release_key(a.version):  # type: ignore[operator]
                continue
            g = (a.name, a.version, newest)
            o = groups.get(g)
            if o is None:
                o = groups[g] = Outdated(template=template, source=a.name, packages=[], locked=a.version,
                                         available=newest, pocket="index", layers=[])
            if a.name not in o.packages:
                o.packages.append(a.name)
            if lname not in o.layers:
                o.layers.append(lname)
    return sorted(groups.values(), key=lambda o: o.source)


def outdated(project, *, security_only: bool = False, wheels: bool = True,
             indices: dict[tuple[str, ...], Candidates] | None = None,
             log: Callable[[str], None] = lambda m: None) -> list[Outdated]:
    """What of `project`'s lock has newer versions at its sources. `indices` caches fetched
    indices by their source lines (templates sharing sources fetch them once)."""
    from .lock import toml as locktoml
    from .settings import load as load_settings

    load_settings(project.root)  # a bad lxclayer.toml is refused before anything is fetched
    lock = locktoml.read(project.lock_file)
    if lock is None:
        raise UserError(f"{project.lock_file}: no lock; run `lxclayer lock` first")
    name = project.template.name
    out: list[Outdated] = []
    if any(la.artifacts.get("packages") for la in lock.layers.values()):
        lines = template_sources(project)
        key = tuple(lines)
        cache = indices if indices is not None else {}
        if key not in cache:
            log(f"fetching {len(lines)} Debian indices")
            cache[key] = fetch_indices(lines, project.template.arch, log=log)
        out += debs_outdated(name, lock, cache[key], security_only=security_only)
    if wheels and not security_only:
        out += wheels_outdated(name, project, lock)
    return out


def render_text(items: list[Outdated]) -> str:
    """One line per source package: the same finding in several templates is one line."""
    merged: dict[tuple, list[str]] = {}
    layers: dict[tuple, list[str]] = {}
    for o in items:
        k = (o.source, o.locked, o.available, o.pocket, tuple(o.packages))
        merged.setdefault(k, []).append(o.template)
        layers.setdefault(k, [])
        layers[k] += [la for la in o.layers if la not in layers[k]]
    lines = []
    for k, templates in merged.items():
        src, old, new, pocket, pkgs = k
        lines.append(f"{src} {old} -> {new} ({pocket}): {', '.join(pkgs)}; "
                     f"layers {', '.join(layers[k])}; templates {', '.join(templates)}\n")
    return "".join(lines)

