"""Resolution with apt: which exact .debs a package selection means.

apt runs on the host with a private configuration (no host sources, preferences or lists are
read; nothing of the host's apt state is written): `update` fetches the signed indices of the
given sources, `simulate` asks apt's solver what it would install on top of a given dpkg status
(empty for a new root file system), and :func:`pins` turns that into artifacts carrying the
sha256, pool path and size the archive's Packages index gives for each .deb.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import hermetic
from ..errors import BuildError
from ..lock.model import Artifact
from ..progress.events import Program

PKG_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
INDEX_FIELDS = ("Package", "Version", "Architecture", "Essential", "Priority", "Filename", "Size", "SHA256")


@dataclass(frozen=True)
class SourceLine:
    """One `deb [options] uri suite [component...]` line."""

    uri: str
    suite: str
    components: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # "key=value" items of the [...] part

    def line(self, extra: Iterable[str] = ()) -> str:
        opts = list(self.options) + [o for o in extra if o.split("=", 1)[0] not in self.option_names]
        head = f"deb [{' '.join(opts)}] " if opts else "deb "
        return head + " ".join([self.uri, self.suite, *self.components])

    @property
    def option_names(self) -> set[str]:
        return {o.split("=", 1)[0] for o in self.options}

    @property
    def flat(self) -> bool:
        return self.suite.endswith("/")


def parse_source_line(text: str) -> SourceLine:
    """Parse a one-line sources.list entry (`deb ...`); raises ValueError."""
    text = text.strip()
    if not text.startswith("deb ") and not text.startswith("deb\t"):
        raise ValueError("a sources line starts with 'deb '")
    rest = text[3:].strip()
    options: tuple[str, ...] = ()
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError("unclosed '[' in the options")
        options = tuple(rest[1:end].split())
        rest = rest[end + 1:].strip()
    parts = rest.split()
    if len(parts) < 2:
        raise ValueError("a sources line needs a URI and a suite")
    uri, suite, *components = parts
    if not re.match(r"^(https?|file):/", uri):
        raise ValueError(f"{uri!r} is not an http(s):// or file:/ URI")
    if not suite.endswith("/") and not components:
        raise ValueError("a suite that is not a flat path ('./') needs components")
    return SourceLine(uri=uri, suite=suite, components=tuple(components), options=options)


def parse_sources(text: str, deb822: bool = False) -> list[SourceLine]:
    """The `deb` entries of a sources.list (one-line) or a .sources (deb822) file."""
    out: list[SourceLine] = []
    if deb822:
        from .deb822 import paragraphs

        for p in paragraphs(text):
            low = {k.lower(): v for k, v in p.items()}
            if "deb" not in low.get("types", "").split() or low.get("enabled", "yes") == "no":
                continue
            opts = tuple(f"signed-by={low['signed-by']}" for _ in [0] if "signed-by" in low
                         and "\n" not in low["signed-by"])
            for uri in low.get("uris", "").split():
                for suite in low.get("suites", "").split():
                    out.append(SourceLine(uri=uri, suite=suite,
                                          components=tuple(low.get("components", "").split()), options=opts))
        return out
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("deb ") or line.startswith("deb\t"):
            try:
                out.append(parse_source_line(line))
            except ValueError:
                continue
    return out


# --- the Packages index -------------------------------------------------------------------------


def scan_index(text: str, fields: tuple[str, ...] = INDEX_FIELDS) -> Iterator[dict[str, str]]:
    """The paragraphs of a Packages index, keeping only `fields` (fast path for big indices)."""
    wanted = tuple(f + ":" for f in fields)
    for chunk in text.split("\n\n"):
        para: dict[str, str] = {}
        for line in chunk.split("\n"):
            if line.startswith(wanted):
                k, _, v = line.partition(":")
                para[k] = v.strip()
        if "Package" in para:
            yield para


@dataclass
class Index:
    """Packages paragraphs by (name, version, arch), and the names selected by a variant."""

    by_key: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)
    # per release (suite) name: name -> paragraph of the newest... (only Essential/Priority read)
    essential: dict[str, set[str]] = field(default_factory=dict)
    priority: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)

    def add(self, release: str, text: str, native: str) -> None:
        ess = self.essential.setdefault(release, set())
        prio = self.priority.setdefault(release, {})
        for p in scan_index(text):
            arch = p.get("Architecture", "")
            key = (p["Package"], p.get("Version", ""), arch)
            self.by_key.setdefault(key, p)
            self.names.add(p["Package"])
            if arch not in (native, "all"):
                continue
            if p.get("Essential", "").lower() == "yes":
                ess.add(p["Package"])
            if "Priority" in p:
                prio.setdefault(p["Priority"], set()).add(p["Package"])


# mmdebstrap's variants (man mmdebstrap, VARIANTS): what each selects besides --include.
VARIANTS = {
    "extract": None,
    "custom": (),
    "essential": ("essential",),
    "apt": ("essential", "apt"),
    "required": ("essential", "required", "apt"),
    "minbase": ("essential", "required", "apt"),
    "buildd": ("essential", "required", "apt", "build-essential"),
    "important": ("essential", "required", "important", "apt"),
    "debootstrap": ("essential", "required", "important", "apt"),
    "-": ("essential", "required", "important", "apt"),
    "standard": ("essential", "required", "important", "standard", "apt"),
}


def variant_names(index: Index, suite: str, variant: str) -> set[str]:
    parts = VARIANTS[variant] or ()
    ess = index.essential.get(suite, set())
    prio = index.priority.get(suite, {})
    out: set[str] = set()
    for part in parts:
        if part == "essential":
            out |= ess
        elif part in ("required", "important", "standard"):
            out |= prio.get(part, set())
        else:
            out.add(part)
    return out


# --- apt on the host ----------------------------------------------------------------------------


INST_RE = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) [^\[]*\[([^\]]+)\]\)")


def parse_simulation(text: str) -> list[tuple[str, str, str]]:
    """(name, version, arch) of every `Inst` line of `apt-get -s install`."""
    out = []
    for line in text.splitlines():
        m = INST_RE.match(line)
        if m:
            name, version, arch = m.groups()
            out.append((name.split(":", 1)[0], version, arch))
    return out


def apt_failure(text: str) -> str:
    """One line saying why apt failed, from its output."""
    lines = [ln.rstrip() for ln in text.splitlines()]
    for ln in lines:
        m = re.match(r"^E: Unable to locate package (\S+)", ln)
        if m:
            return f"package {m.group(1)!r} does not exist in the configured sources"
        m = re.match(r"^E: (Version '.*' for '.*' was not found)", ln)
        if m:
            return m.group(1)
        m = re.match(r"^E: Package '(\S+)' has no installation candidate", ln)
        if m:
            return f"package {m.group(1)!r} has no installation candidate (only referred to, or not for this architecture)"
    # unmet dependencies: " foo : Depends: bar but it is not installable"
    deps = [ln.strip() for ln in lines if re.match(r"^\s+\S+ : (Pre-)?Depends:", ln) or
            re.match(r"^\S+ : (Pre-)?Depends:", ln)]
    if deps:
        return "unmet dependencies: " + "; ".join(deps[:3])
    errs = [ln[3:] for ln in lines if ln.startswith(("E: ", "W: "))]
    errs = [e for e in errs if "Some index files failed" not in e] or errs
    if errs:
        return errs[0]
    tail = [ln for ln in lines if ln.strip()]
    return tail[-1] if tail else "apt failed"


def update_failure(text: str) -> str | None:
    """The first fetch error of `apt-get update`, as one line, or None."""
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        m = re.match(r"^Err:\d+ (\S+) (\S+)", ln)
        if m:
            reason = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return f"cannot fetch the index of {m.group(1)} {m.group(2)}: {reason}"
    for ln in lines:
        if "NO_PUBKEY" in ln or "EXPKEYSIG" in ln or "BADSIG" in ln or "not signed" in ln:
            return ln.removeprefix("E: ").removeprefix("W: ").strip()
    for ln in lines:
        if ln.startswith("E: "):
            return ln[3:]
    return None


class HostApt:
    """apt-get with a private configuration in `root` (a folder of the build's workdir)."""

    def __init__(self, root: Path, arch: str, sources: list[str], *, status: bytes = b"",
                 recommends: bool = False, log=lambda m: None):
        self.root = root
        self.arch = arch
        self.log = log
        for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
                  "etc/apt/trusted.gpg.d", "var/lib/apt/lists/partial", "var/cache/apt/archives/partial",
                  "var/lib/dpkg", "var/log/apt"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "var/lib/dpkg/status").write_bytes(status)
        (root / "etc/apt/sources.list").write_text("".join(s + "\n" for s in sources))
        r = str(root)
        conf = f"""\
Dir "{r}/";
Dir::State "{r}/var/lib/apt/";
Dir::State::status "{r}/var/lib/dpkg/status";
Dir::Cache "{r}/var/cache/apt/";
Dir::Etc "{r}/etc/apt/";
Dir::Etc::Parts "{r}/etc/apt/apt.conf.d/";
Dir::Etc::PreferencesParts "{r}/etc/apt/preferences.d/";
Dir::Etc::Trusted "{r}/etc/apt/trusted.gpg";
Dir::Etc::TrustedParts "{r}/etc/apt/trusted.gpg.d/";
Dir::Log "{r}/var/log/apt/";
APT::Architecture "{arch}";
APT::Architectures {{ "{arch}"; }};
APT::Install-Recommends "{'true' if recommends else 'false'}";
APT::Get::Show-Versions "true";
Debug::NoLocking "true";
Acquire::Languages "none";
Acquire::Retries "3";
Acquire::http::Timeout "30";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
"""
        self.conf = root / "apt.conf"
        self.conf.write_text(conf)

    def env(self) -> dict[str, str]:
        # Added to lxclayer.hermetic's fixed environment; resolving needs the caller's proxy.
        return {"APT_CONFIG": str(self.conf), "DEBIAN_FRONTEND": "noninteractive"}

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        argv = ["apt-get", *args]
        prog = Program(argv, self.log)
        try:
            p = hermetic.run(argv, env=self.env(), proxies=True, capture_output=True, text=True, check=check)
        except subprocess.CalledProcessError as e:
            prog.lines((e.stdout or "") + (e.stderr or ""))
            prog.finished(e.returncode)
            raise
        except FileNotFoundError:
            raise BuildError("apt-get is not installed on this host (lxclayer runs on Debian)") from None
        prog.lines(p.stdout + p.stderr)
        prog.finished(p.returncode)
        return p

    def update(self) -> None:
        p = self.run("--error-on=any", "update")
        out = p.stdout + "\n" + p.stderr
        failure = update_failure(out)
        if p.returncode != 0 or failure:
            raise BuildError(failure or apt_failure(out))

    def index_files(self) -> list[tuple[str, str]]:
        """(release, file) of every downloaded Packages index."""
        p = hermetic.run(
            ["apt-get", "indextargets", "--format", "$(RELEASE)\t$(FILENAME)", "Created-By: Packages"],
            env=self.env(), capture_output=True, text=True, check=True,
        )
        out = []
        for line in p.stdout.splitlines():
            release, _, filename = line.partition("\t")
            if filename and os.path.exists(filename):
                out.append((release, filename))
        return out

    def index(self) -> Index:
        idx = Index()
        for release, filename in self.index_files():
            text = hermetic.run(["/usr/lib/apt/apt-helper", "cat-file", filename], env=self.env(),
                                  capture_output=True, check=True).stdout.decode("utf-8", "replace")
            idx.add(release, text, self.arch)
        return idx

    def simulate(self, names: Iterable[str]) -> list[tuple[str, str, str]]:
        p = self.run("-s", "-y", "install", *sorted(names))
        if p.returncode != 0:
            raise BuildError(apt_failure(p.stdout + "\n" + p.stderr))
        return parse_simulation(p.stdout)


def pins(installs: list[tuple[str, str, str]], index: Index) -> dict[str, Artifact]:
    """Artifacts for apt's `Inst` list: sha256, pool path and size from the index."""
    out: dict[str, Artifact] = {}
    for name, version, arch in installs:
        p = index.by_key.get((name, version, arch))
        if p is None or "SHA256" not in p or "Filename" not in p:
            raise BuildError(f"{name} {version} ({arch}) has no SHA256 in the Packages index")
        out[name] = Artifact(name=name, version=version, arch=arch, sha256=p["SHA256"],
                             source=p["Filename"], size=int(p.get("Size", "0") or 0))
    return dict(sorted(out.items()))


def deb_filename(a: Artifact) -> str:
    return f"{a.name}_{a.version.replace(':', '%3a')}_{a.arch}.deb"
