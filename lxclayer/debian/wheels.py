"""Python wheels: which file of a pinned version fits the container, from a PEP 691 index.

`uv pip compile --generate-hashes` pins each requirement to a version and lists the sha256 of
every file of that version. A build must install one file per package, the one pip or uv would
pick in the container, so this module ranks the wheels among those hashes by the container's
compatibility tags (CPython version, glibc version, architecture), as `packaging.tags` does.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .. import download
from ..errors import BuildError

ARCH = {"amd64": "x86_64", "arm64": "aarch64", "i386": "i686", "ppc64el": "ppc64le", "s390x": "s390x",
        "armhf": "armv7l", "riscv64": "riscv64"}
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
UV_MAX_GLIBC = (2, 36)


def normalise_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Target:
    """The interpreter and platform wheels are chosen for."""

    python: tuple[int, int]  # (3, 11)
    glibc: tuple[int, int]  # (2, 36)
    machine: str  # x86_64

    @property
    def uv_platform(self) -> str:
        # uv accepts only the manylinux levels it lists (Debian 13's glibc 2.41 is not one of
        # them in uv 0.13). 2.36 is proven; the wheels this project uses need 2.28 at most, and
        # the wheels picked are checked against the full tag list (tags()) anyway.
        major, minor = min(self.glibc, UV_MAX_GLIBC)
        return f"{self.machine}-manylinux_{major}_{minor}"

    @property
    def python_version(self) -> str:
        return f"{self.python[0]}.{self.python[1]}"

    def platforms(self) -> list[str]:
        out = []
        major, minor = self.glibc
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        for m in range(minor, 4, -1):
            out.append(f"manylinux_{major}_{m}_{self.machine}")
            if m in legacy:
                out.append(f"{legacy[m]}_{self.machine}")
        out.append(f"linux_{self.machine}")
        return out

    def tags(self) -> list[str]:
        """Supported `python-abi-platform` tags, best first (as packaging.tags orders them)."""
        major, minor = self.python
        cp = f"cp{major}{minor}"
        plats = self.platforms()
        out = [f"{cp}-{cp}-{p}" for p in plats]
        out += [f"{cp}-abi3-{p}" for p in plats]
        out += [f"{cp}-none-{p}" for p in plats]
        for m in range(minor - 1, 1, -1):
            out += [f"cp{major}{m}-abi3-{p}" for p in plats]
        for py in [f"py{major}{minor}", f"py{major}", *(f"py{major}{m}" for m in range(minor - 1, -1, -1))]:
            out += [f"{py}-none-{p}" for p in plats]
        out.append(f"{cp}-none-any")
        for py in [f"py{major}{minor}", f"py{major}", *(f"py{major}{m}" for m in range(minor - 1, -1, -1))]:
            out.append(f"{py}-none-any")
        return out


def wheel_tags(filename: str) -> set[str]:
    """The tags a wheel file name declares (compressed tag sets expanded)."""
    if not filename.endswith(".whl"):
        return set()
    parts = filename[:-4].split("-")
    if len(parts) < 5:
        return set()
    py, abi, plat = parts[-3:]
    return {f"{x}-{y}-{z}" for x in py.split(".") for y in abi.split(".") for z in plat.split(".")}


def best_wheel(files: list[dict], target: Target) -> dict | None:
    """The file pip would install in the target, of `files` (PEP 691 file dicts)."""
    rank = {t: i for i, t in enumerate(target.tags())}
    best, best_rank = None, None
    for f in files:
        r = min((rank[t] for t in wheel_tags(f["filename"]) if t in rank), default=None)
        if r is None:
            continue
        if best_rank is None or (r, f["filename"]) < (best_rank, best["filename"]):  # type: ignore[index]
            best, best_rank = f, r
    return best


def tag_of(filename: str) -> str:
    return "-".join(filename[:-4].split("-")[-3:])


def simple_files(index_url: str, name: str) -> list[dict]:
    """The files of project `name` on a PEP 691 (JSON) simple index, URLs made absolute."""
    url = f"{index_url.rstrip('/')}/{normalise_name(name)}/"
    try:
        body, base = download.read([url], headers={"Accept": SIMPLE_JSON})
        data = json.loads(body)
    except download.DownloadError as e:
        if e.kind == download.GONE:
            raise BuildError(f"{name!r} is not on the package index {download.redact(index_url)}") from None
        raise BuildError(f"cannot read the package index: {e.reason}") from None
    except ValueError as e:
        raise BuildError(f"cannot read {download.redact(url)}: not JSON ({e})") from None
    out = []
    for f in data.get("files", []):
        sha = (f.get("hashes") or {}).get("sha256")
        if not sha:
            continue
        out.append({"filename": f["filename"], "url": urllib.parse.urljoin(base, f["url"]), "sha256": sha,
                    "size": int(f.get("size") or 0), "yanked": bool(f.get("yanked"))})
    return out


@dataclass(frozen=True)
class Pin:
    name: str  # normalised
    version: str
    hashes: tuple[str, ...]


def parse_compiled(text: str) -> list[Pin]:
    """The pins of `uv pip compile --generate-hashes` output."""
    out: list[Pin] = []
    cur: list | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            algo, _, value = line[len("--hash="):].rstrip(" \\").partition(":")
            if cur is not None and algo == "sha256":
                cur[2].append(value)
            continue
        if line.startswith("-"):
            continue
        req = line.rstrip(" \\").split(";", 1)[0].split(" --hash=", 1)[0].strip()
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*(\S+)$", req)
        if not m:
            raise ValueError(f"unexpected line in uv's output: {raw!r}")
        if cur is not None:
            out.append(Pin(cur[0], cur[1], tuple(cur[2])))
        cur = [normalise_name(m.group(1)), m.group(3), []]
        if "--hash=" in line:
            for h in re.findall(r"--hash=sha256:([0-9a-f]{64})", line):
                cur[2].append(h)
    if cur is not None:
        out.append(Pin(cur[0], cur[1], tuple(cur[2])))
    return out


def extract_script(wheel: Path, script: str, dest: Path) -> Path:
    """Extract `<name>-<version>.data/scripts/<script>` of a wheel to `dest` (executable)."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if re.match(rf"^[^/]+\.data/scripts/{re.escape(script)}$", n)]
        if not names:
            raise BuildError(f"{wheel.name} has no {script} program")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with z.open(names[0]) as src, open(dest, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
    dest.chmod(0o755)
    return dest
