"""The journey suite's machinery: the two real templates built once per test session, and per
journey a copy of the project (its own git repository) and a store of its own that costs
almost nothing to make.

**One build per template per session.** `warm` builds both templates into the session's store
(`$LXCLAYER_STORE`, which CI points at an empty folder; tests/test_e2e_template.py builds into
the same store, so whichever runs first pays for the cold build and the other finds every layer
cached). It builds as a user does on a fresh clone, `lxclayer build` (normal mode), from a
pristine copy of the repository: if the host's tools differ from those the committed lock
records (say dpkg 1.21.22 -> 1.21.23 after a host update), the copy's lock is brought up to
date and committed in the copy, and every journey measures against that lock.

**A store per journey.** `journey_store` makes a store beside the session's store (same file
system) whose `layers/`, `blobs/`, `artifacts/` and `chunks/` are hard links to the session
store's files: a few thousand `link()` calls, no data copied. That is safe because the store
never writes into a file it has published: entries, blobs and chunks appear by rename and go
by unlink, so a journey adding, replacing or evicting anything changes only its own names. A
journey that damages a blob must replace the file, not write into it (`damage_blob` does), or
it would damage the session store through the shared inode.

Snapshots (`snapshots/`) are a cache of unpacked layers that the store checks by inode and
ctime; a hard link moves a file's ctime, so they cannot be linked. By default a journey store's
`snapshots` is a symbolic link to the session store's: program layers are then built on the
snapshots the session's build left, and a journey adds snapshots for what it builds (a cache:
harmless). A journey that collects garbage must not sweep the session's snapshots: it asks for
`share_snapshots=False` (and then builds only files layers, which need none).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..e2e_support import require_root, require_tools

REPO = Path(__file__).resolve().parents[2]
DEFAULT = "debian-13-stock-analysis"  # lxclayer.toml's default-template
TEMPLATES = ("debian-13-stock-analysis", "debian-12-stock-analysis")
PROJECT_FILES = ("layers", "templates", "locks", "lxclayer.toml")
# Environment that would change what a journey exercises: the user of these tests has none of it.
CLEARED_ENV = ("LXCLAYER_SNAPSHOTS", "LXCLAYER_CACHE", "LXCLAYER_CACHE_MODE", "REGISTRY_AUTH_FILE",
               "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "CI")


def session_store() -> Path:
    """The store the whole test session builds into (as lxclayer chooses it)."""
    env = os.environ.get("LXCLAYER_STORE")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "lxclayer" / "store"


def _env(store: Path, extra: dict | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env["LXCLAYER_STORE"] = str(store)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def lxclayer(project: Path, store: Path, *args: str, env: dict | None = None, prefix: tuple[str, ...] = (),
             timeout: float = 1800) -> Run:
    """`lxclayer --project PROJECT ARGS` as a user runs it: its own process (as tests/conftest.py's
    run_cli), the store given the way users give it ($LXCLAYER_STORE). `prefix` runs it under
    another program (`unshare --net`)."""
    t = time.monotonic()
    p = subprocess.run([*prefix, sys.executable, "-m", "lxclayer", "--project", str(project), *args],
                       env=_env(store, env), text=True, capture_output=True, timeout=timeout, cwd=project)
    return Run(list(args), p.returncode, p.stdout, p.stderr, time.monotonic() - t)


@dataclass
class Run:
    args: list[str]
    rc: int
    out: str
    err: str
    seconds: float

    def __str__(self) -> str:  # what an assertion shows
        return f"lxclayer {' '.join(self.args)}: exit {self.rc}\n--- stdout\n{self.out[-4000:]}\n--- stderr\n{self.err[-6000:]}"

    @property
    def report(self) -> dict:
        return json.loads(self.out)

    def states(self) -> dict[str, str]:
        return {la["name"]: la["state"] for la in self.report["layers"]}

    def layers(self, state: str) -> set[str]:
        return {n for n, s in self.states().items() if s == state}

    @property
    def built(self) -> set[str]:
        return self.layers("built")

    @property
    def cached(self) -> set[str]:
        return self.layers("cached")

    def sha256(self) -> dict[str, str]:
        return {a["format"]: a["sha256"] for a in self.report["archives"]}

    def assert_no_traceback(self) -> None:
        assert "Traceback" not in self.err + self.out, str(self)


class Lock:
    """A lockfile as the user reads it: its bytes, and (parsed as plain TOML, not by lxclayer)
    the stack, each layer's kind and whether it reads the layers below, and the archives."""

    def __init__(self, data: bytes):
        self.bytes = data
        self.doc = tomllib.loads(data.decode())

    @property
    def stack(self) -> list[str]:
        return list(self.doc["template"]["layers"])

    def sha256(self) -> dict[str, str]:
        return {fmt: a["sha256"] for fmt, a in self.doc["template"]["archives"].items()}

    def layer(self, name: str) -> dict:
        return self.doc["layers"][name]

    def packages(self, name: str) -> dict:
        return self.layer(name).get("artifacts", {}).get("packages", {})

    def rebuilt_by(self, changed: str) -> set[str]:
        """What a change of `changed`'s output rebuilds: it, and every layer above it whose input
        holds the outputs below (`parents = true`: apt, script, uv); files layers above do not
        read the tree below and stay cached."""
        stack = self.stack
        above = stack[stack.index(changed) + 1:]
        return {changed} | {n for n in above if self.layer(n)["parents"]}


@dataclass
class Warm:
    """The session's build of both templates."""
    store: Path
    project: Path  # the pristine copy (a git repository) every journey starts from
    locks: dict[str, bytes]  # template -> its lock's bytes (as committed in `project`)
    reports: dict[str, dict]  # template -> the JSON report of the session's build
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "journey", "GIT_AUTHOR_EMAIL": "journey@example.invalid",
           "GIT_COMMITTER_NAME": "journey", "GIT_COMMITTER_EMAIL": "journey@example.invalid"}
    return subprocess.run(["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args], cwd=cwd,
                          env=env, check=True, capture_output=True, text=True).stdout


def copy_project(src: Path, dst: Path, *, with_git: bool = True) -> Path:
    """A user's checkout: the project's files (no dist/, no .venv), committed in a git
    repository of its own so that `lock diff` has a HEAD."""
    dst.mkdir(parents=True)
    for name in PROJECT_FILES:
        s = src / name
        if s.is_dir():
            shutil.copytree(s, dst / name, symlinks=True)
        else:
            shutil.copy2(s, dst / name)
    if with_git:
        git(dst, "init", "-q")
        git(dst, "add", "-A")
        git(dst, "commit", "-q", "-m", "the project as the user cloned it")
    return dst


@pytest.fixture(scope="session")
def warm(tmp_path_factory) -> Warm:
    require_root()
    require_tools("mmdebstrap", "git", "unshare")
    store = session_store()
    project = copy_project(REPO, tmp_path_factory.mktemp("journeys") / "project")
    warm = Warm(store, project, {}, {})
    for name in TEMPLATES:
        t = time.monotonic()
        r = lxclayer(project, store, "--template", name, "build", "--json", timeout=3600)
        warm.seconds[name] = time.monotonic() - t
        assert r.rc == 0, f"the session's build of {name} failed\n{r}"
        warm.reports[name] = r.report
        if r.report["lock_written"]:
            warm.notes.append(f"{name}: the committed lock was brought up to date on this host")
        lock = project / "locks" / f"{name}.lock"
        warm.locks[name] = lock.read_bytes()
        assert Lock(warm.locks[name]).sha256() == r.sha256(), r
    if git(project, "status", "--porcelain", "--untracked-files=no"):
        git(project, "commit", "-q", "-am", "locks for this host")
    shutil.rmtree(project / "dist", ignore_errors=True)
    print(f"\njourneys: session build {', '.join(f'{k} {v:.0f} s' for k, v in warm.seconds.items())}"
          + "".join(f"; {n}" for n in warm.notes))
    return warm


def clone_store(src: Path, dst: Path, *, share_snapshots: bool = True) -> Path:
    """A store holding what `src` holds, by hard links (see the module's docstring)."""
    dst.mkdir(parents=True)
    for sub in ("layers", "blobs", "artifacts", "chunks"):
        if (src / sub).is_dir():
            subprocess.run(["cp", "-al", str(src / sub), str(dst / sub)], check=True)
    shutil.copy2(src / "FORMAT", dst / "FORMAT")
    if share_snapshots:
        (src / "snapshots").mkdir(exist_ok=True)
        (dst / "snapshots").symlink_to(src / "snapshots")
    return dst


class Journey:
    """One user's project and store: run lxclayer in it, edit it, read its locks."""

    def __init__(self, warm: Warm, root: Path, store: Path):
        self.warm = warm
        self.root = root
        self.project = copy_project(warm.project, root / "project")
        self.store = store
        self.runs: list[Run] = []
        self.base = git(self.project, "rev-parse", "HEAD").strip()

    def reset(self) -> None:
        """The checkout as cloned (what an earlier journey edited or committed undone); dist/ is
        kept, as a user's is: the builder checks it."""
        git(self.project, "reset", "-q", "--hard", self.base)
        git(self.project, "clean", "-fdq", "-e", "/dist")
        self.runs.clear()

    def lx(self, *args: str, **kw) -> Run:
        r = lxclayer(self.project, self.store, *args, **kw)
        self.runs.append(r)
        r.assert_no_traceback()  # whatever the outcome, a user never gets one
        return r

    def timings(self) -> str:
        """Per run: the command and its wall time; for builds, what was built and in how long."""
        lines = []
        for r in self.runs:
            line = f"{r.seconds:6.1f} s  lxclayer {' '.join(r.args)}"
            if "build" in r.args and "--json" in r.args and r.rc == 0:
                rep = r.report
                built = [f"{la['name']} {la['seconds']:.0f}" for la in rep["layers"] if la["state"] == "built"]
                line += f"  [built: {', '.join(built) or 'nothing'}]"
            lines.append(line)
        return "\n".join(lines)

    def build(self, template: str, *args: str, ok: bool = True, **kw) -> Run:
        r = self.lx("--template", template, "build", "--json", *args, **kw)
        r.assert_no_traceback()
        if ok:
            assert r.rc == 0, r
        return r

    def lock_file(self, template: str) -> Path:
        return self.project / "locks" / f"{template}.lock"

    def lock(self, template: str) -> Lock:
        return Lock(self.lock_file(template).read_bytes())

    def path(self, rel: str) -> Path:
        return self.project / rel

    def edit(self, rel: str, old: str, new: str) -> None:
        """Replace `old` (which must be there, once) by `new` in a project file."""
        p = self.path(rel)
        text = p.read_text()
        assert text.count(old) == 1, f"{rel}: {old!r} found {text.count(old)} times"
        p.write_text(text.replace(old, new))

    def restore(self, rel: str) -> None:
        """Put a file (or folder) back as committed, as `git checkout` does (a folder that was
        added is removed)."""
        git(self.project, "checkout", "-q", "HEAD", "--", rel) if self._tracked(rel) else shutil.rmtree(self.path(rel))

    def _tracked(self, rel: str) -> bool:
        return bool(git(self.project, "ls-files", "--", rel).strip())


def _scratch(store: Path) -> Path:
    """A folder beside the session store (hard links and renames need one file system)."""
    store.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".lxclayer-journey-", dir=store.parent))


@pytest.fixture(scope="session")
def user(warm, tmp_path_factory):
    """The user of the everyday journeys: one checkout (both templates) and one store cloned
    from the session's, kept for the session so that each journey starts where a user is, with
    dist/ made (a journey that breaks its store takes `own_journey`)."""
    scratch = _scratch(warm.store)
    try:
        yield Journey(warm, tmp_path_factory.mktemp("user"), clone_store(warm.store, scratch / "store"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def journey(user):
    """The user's checkout, reset to what was cloned."""
    user.reset()
    yield user
    print(f"\n{user.timings()}")


@pytest.fixture
def own_journey(warm, tmp_path):
    """A checkout and a store of its own (cloned from the session's, snapshots shared), for a
    journey that damages or removes what is in its store."""
    scratch = _scratch(warm.store)
    try:
        j = Journey(warm, tmp_path, clone_store(warm.store, scratch / "store"))
        yield j
        print(f"\n{j.timings()}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def scratch_dir(warm):
    """A folder on the session store's file system, removed afterwards."""
    scratch = _scratch(warm.store)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def damage_blob(path: Path, how: str) -> None:
    """Damage a store blob the way a disk or a careless hand does, by replacing the file (never
    writing into it: it is a hard link to the session store's blob)."""
    data = path.read_bytes()
    path.unlink()
    if how == "delete":
        return
    if how == "flip":
        data = bytes([data[0] ^ 0x01]) + data[1:]
    elif how == "truncate":
        data = data[: len(data) // 2]
    else:
        raise ValueError(how)
    path.write_bytes(data)
    path.chmod(0o444)
