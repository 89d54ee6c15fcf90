"""`kind = "uv"`: Python virtual environments, made with the container's own Python, holding
exactly the wheels pinned in the lockfile.

uv itself is a wheel from PyPI pinned by version (and, in the lock, by sha256); lxclayer takes
the `uv` program out of the wheel (no installer script is run) and uses it from outside the
container: it is mounted read-only into the chroot while the layer is built and is not part of
the layer.

Resolution runs `uv pip compile --generate-hashes --only-binary :all:` on the host for the
container's Python version and platform (read from the layers below: the interpreter named by
`python`, glibc's version from dpkg's status). Each pinned version's wheel for that target is
chosen among the hashes uv lists and recorded: name, version, tag, sha256, URL and size.

Building installs those wheels and nothing else: `uv pip install --require-hashes --no-deps
--no-index --offline` from a requirements file written from the pins, out of a folder of wheels
taken from the store (downloaded once, checked by sha256). Byte-code is compiled with checked
hashes (`compileall --invalidation-mode checked-hash`): a .pyc then names its source by content,
not by mtime, so it is the same in every build and stays valid when the archive clamps mtimes.
"""

import re
import shutil
import time
from pathlib import Path

from .. import hermetic
from ..artifacts import places_for
from ..debian.chroot import Bind, Chroot
from ..debian.fetch import fetch_all, link_or_copy
from ..debian.wheels import (
    ARCH,
    Target,
    best_wheel,
    extract_script,
    normalise_name,
    parse_compiled,
    simple_files,
    tag_of,
)
from ..errors import BuildError
from ..fsio import sha256_file
from ..kinds.uv import DEFAULT_INDEX, VENV_NAME_RE, VERSION_RE, Settings, Venv, validate  # noqa: F401 (what the engine asks a builder for)
from ..lock.model import Artifact
from ..manifest import Entry
from ..progress.events import Program
from ..realise.context import Artifacts, Context, Result
from ..realise.program import (
    build_in_chroot,
    installed_from_status,
    lower_status,
    require_root,
    require_tool,
    shown,
)

KIND = "uv"

UV_INSIDE = "/run/lxclayer/uv"
WHEELS_INSIDE = "/run/lxclayer/wheels"
REQS_INSIDE = "/run/lxclayer/requirements"
# `python -m compileall -q -q -j 0 --invalidation-mode checked-hash DIR...`, file for file the
# same .pyc bytes (compileall.compile_file on every .py under the folders, not following
# symbolic links to folders, as compile_dir walks), but one process pool for all the folders
# (compileall makes one per folder) handed the files 16 at a time (it hands them one by one):
# 3.65 s -> 2.7 s for the 1,185 files of the five stock-analysis venvs on 2 cores.
COMPILE_ALL = """
import compileall, os, py_compile, sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
files = sorted(os.path.join(r, f) for d in sys.argv[1:] for r, _, fs in os.walk(d) for f in fs if f.endswith(".py"))
job = partial(compileall.compile_file, quiet=2, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
    ok = all(list(pool.map(job, files, chunksize=16)))
sys.exit(0 if ok else 1)
"""
CACHE_INSIDE = "/run/lxclayer/uv-cache"  # the layer's venvs share the wheels uv unpacked (not in the layer)


def _lookup_path(tree: dict[str, Entry], path: str, depth: int = 0) -> tuple[str, Entry] | None:
    """Follow symlinks (within the lower tree) to the entry `path` names."""
    if depth > 20:
        return None
    parts = [p for p in path.strip("/").split("/") if p and p != "."]
    cur: list[str] = []
    for i, part in enumerate(parts):
        if part == "..":
            if cur:
                cur.pop()
            continue
        cur.append(part)
        e = tree.get("/".join(cur))
        if e is None:
            return None
        if e.type == "symlink":
            target = e.target
            base = "" if target.startswith("/") else "/".join(cur[:-1])
            rest = "/".join(parts[i + 1:])
            return _lookup_path(tree, "/".join(x for x in (base, target.lstrip("/"), rest) if x), depth + 1)
    return "/".join(cur), tree["/".join(cur)]


def target(ctx: Context) -> Target:
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    tree = {e.path: e for e in ctx.lower_tree()}
    found = _lookup_path(tree, s.python)
    if found is None or found[1].type != "file":
        raise BuildError(f"{s.python} does not exist in the layers below (install python3 in an apt layer below)",
                         file=shown(ctx), key="python")
    m = re.search(r"python(\d)\.(\d+)$", found[0])
    if not m:
        raise BuildError(f"cannot tell the Python version of {s.python} (it is /{found[0]})", file=shown(ctx), key="python")
    status = installed_from_status(lower_status(ctx))
    libc = status.get("libc6") or status.get("libc6.1")
    gm = re.match(r"^(?:\d+:)?(\d+)\.(\d+)", libc[0]) if libc else None
    if not gm:
        raise BuildError("the layers below have no glibc (libc6) installed", file=shown(ctx))
    machine = ARCH.get(ctx.arch)
    if machine is None:
        raise BuildError(f"architecture {ctx.arch!r} is not supported by the uv builder", file=shown(ctx))
    return Target(python=(int(m.group(1)), int(m.group(2))), glibc=(int(gm.group(1)), int(gm.group(2))),
                  machine=machine)


# --- uv itself -----------------------------------------------------------------------------


def _uv_pin(ctx: Context, tgt: Target) -> Artifact:
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    try:
        files = simple_files(DEFAULT_INDEX, "uv")
    except BuildError as e:
        raise BuildError(e.reason, file=shown(ctx), key="uv_version") from None
    prefix = f"uv-{s.uv_version}-"
    mine = [f for f in files if f["filename"].startswith(prefix) and f["filename"].endswith(".whl") and not f["yanked"]]
    # uv is a py3-none-<platform> wheel: any Python 3 will do for ranking.
    best = best_wheel(mine, Target(python=(3, 0), glibc=tgt.glibc, machine=tgt.machine))
    if best is None:
        raise BuildError(f"uv {s.uv_version} has no wheel for {tgt.machine} with glibc {tgt.glibc[0]}.{tgt.glibc[1]} on PyPI",
                         file=shown(ctx), key="uv_version")
    return Artifact(name="uv", version=s.uv_version, arch=tag_of(best["filename"]), sha256=best["sha256"],
                    source=best["url"], size=best["size"])


def _uv_program(ctx: Context, pin: Artifact) -> Path:
    """The uv program, out of its pinned wheel (from the store, or downloaded into it).

    Taken out of the wheel once (40 MB inflated: most of a second) and kept in the store's
    artifact area, found again through the record `uvprogram-<the wheel's sha256>` that names
    its sha256; a layer built later copies it (checked by the store) instead."""
    dest = ctx.workdir / "uv" / "uv"
    if dest.exists():
        return dest
    record = f"uvprogram-{pin.sha256}"
    got = ctx.store.get_chunk(record)
    kept = ctx.store.artifact(got.decode(), name=f"uv {pin.version} program") if got else None
    if kept is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept, dest)
        dest.chmod(0o755)
        return dest
    paths = fetch_all(ctx.store, [(pin, f"uv {pin.version} ({pin.arch})", places_for(ctx)(pin, [pin.source]))],
                      ctx.workdir / "download",
                      offline=ctx.offline, log=ctx.log, file=shown(ctx), key="uv_version", kind="tool")
    extract_script(paths[pin.sha256], "uv", dest)
    try:  # for the next layer or build; without it, the next one takes it out of the wheel again
        copy = ctx.workdir / "uv-program"
        shutil.copyfile(dest, copy)
        ctx.store.put_artifact_file(copy, sha256_file(copy), name=f"uv {pin.version} program")
        ctx.store.put_chunk(record, sha256_file(dest).encode())
    except OSError as e:
        ctx.log(f"uv program not kept in the store: {e.strerror or e}")
    return dest


def _uv_env(ctx: Context) -> dict[str, str]:
    # Added to lxclayer.hermetic's fixed environment (nothing of the caller's but its proxy).
    return {"UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never", "UV_CACHE_DIR": str(ctx.workdir / "uv-cache"),
            "SOURCE_DATE_EPOCH": str(ctx.source_date_epoch)}


# --- resolution ----------------------------------------------------------------------------


def resolve(ctx: Context) -> Artifacts:
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    if ctx.offline:
        raise BuildError("resolving Python requirements needs the network, and --offline is set "
                         "(build with the lockfile, or without --offline)", file=shown(ctx))
    tgt = target(ctx)
    uv_pin = _uv_pin(ctx, tgt)
    uv = _uv_program(ctx, uv_pin)
    wheels: dict[str, Artifact] = {}
    index_cache: dict[str, list[dict]] = {}
    for name, v in sorted(s.venvs.items()):
        t = time.monotonic()
        argv = [str(uv), "pip", "compile", str(ctx.layer.dir.resolve() / v.requirements), "--generate-hashes", "--only-binary", ":all:",
                "--python-version", tgt.python_version, "--python-platform", tgt.uv_platform,
                "--index-url", s.index_url, "--no-header", "--no-annotate", "--quiet"]
        prog = Program(argv, ctx.log)
        p = hermetic.run(argv, env=_uv_env(ctx), proxies=True, capture_output=True, text=True)
        prog.lines(p.stderr)
        prog.finished(p.returncode)
        if p.returncode != 0:
            raise BuildError(f"cannot resolve {v.requirements}: {_uv_reason(p.stderr)}", file=shown(ctx),
                             key=f"venvs.{name}.requirements")
        for pin in parse_compiled(p.stdout):
            if pin.name not in index_cache:
                try:
                    index_cache[pin.name] = simple_files(s.index_url, pin.name)
                except BuildError as e:
                    raise BuildError(e.reason, file=shown(ctx), key=f"venvs.{name}.requirements") from None
            hashes = set(pin.hashes)
            files = [f for f in index_cache[pin.name] if f["sha256"] in hashes and f["filename"].endswith(".whl")]
            best = best_wheel(files, tgt)
            if best is None:
                raise BuildError(f"{pin.name} {pin.version} has no wheel for CPython {tgt.python_version} on "
                                 f"{tgt.uv_platform}", file=shown(ctx), key=f"venvs.{name}.requirements")
            wheels[f"{name}/{pin.name}"] = Artifact(
                name=pin.name, version=pin.version, arch=tag_of(best["filename"]), sha256=best["sha256"],
                source=best["url"], size=best["size"])
        ctx.log(f"venv {name}: {sum(1 for k in wheels if k.startswith(name + '/'))} wheels "
                f"({time.monotonic() - t:.1f} s)")
    return {"tools": {"uv": uv_pin}, "wheels": dict(sorted(wheels.items()))}


def _uv_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("error:", "×")):
            rest = lines[lines.index(ln) + 1:]
            detail = next((r.lstrip("╰─▶ ").strip() for r in rest if r.startswith(("╰─▶", "Because", "caused by"))), "")
            return (ln.removeprefix("error:").removeprefix("×").strip() + (f": {detail}" if detail else ""))[:400]
    return lines[-1][:400] if lines else "uv failed"


# --- building ------------------------------------------------------------------------------


def _venv_pins(pins: dict[str, Artifact], venv: str) -> list[Artifact]:
    return [a for k, a in sorted(pins.items()) if k.split("/", 1)[0] == venv]


def wheel_filename(a: Artifact) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(a.source).path.rsplit("/", 1)[-1])


def requirements_text(pins: list[Artifact]) -> str:
    return "".join(f"{a.name}=={a.version} --hash=sha256:{a.sha256}\n" for a in pins)


def installed_dists(site: Path) -> dict[str, str]:
    out = {}
    if site.is_dir():
        for d in site.iterdir():
            if d.name.endswith(".dist-info"):
                name, _, version = d.name[: -len(".dist-info")].rpartition("-")
                out[normalise_name(name)] = version
    return out


def drop_uv_cache_info(site: Path) -> None:
    """uv records, for a wheel installed from a local file, when it saw that file
    (`<dist>.dist-info/uv_cache.json`, a timestamp): not content, and different in every build.
    Remove it and its line in RECORD."""
    if not site.is_dir():
        return
    for d in sorted(site.glob("*.dist-info")):
        info = d / "uv_cache.json"
        if not info.exists():
            continue
        info.unlink()
        record = d / "RECORD"
        if record.is_file():
            prefix = f"{d.name}/uv_cache.json,"
            lines = record.read_bytes().splitlines(keepends=True)
            record.write_bytes(b"".join(ln for ln in lines if not ln.decode("utf-8", "replace").startswith(prefix)))


def realise(ctx: Context) -> Result:
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    require_root(ctx, "it makes the venvs in a chroot")
    require_tool(ctx, "unshare", "util-linux")
    arts = ctx.artifacts
    if "uv" not in arts.get("tools", {}):
        if ctx.locked:
            raise BuildError("the lockfile pins no uv for this layer", file=shown(ctx), key="uv_version")
        arts = resolve(ctx)
    uv_pin = arts["tools"]["uv"]
    if uv_pin.version != s.uv_version:
        raise BuildError(f"the lock pins uv {uv_pin.version}, the layer asks for {s.uv_version}; "
                         "re-resolve with `lxclayer lock`", file=shown(ctx), key="uv_version")
    pins: dict[str, Artifact] = dict(arts.get("wheels", {}))
    uv = _uv_program(ctx, uv_pin)
    wheel_dir = ctx.workdir / "wheels"
    wheel_dir.mkdir()
    if pins:
        places = places_for(ctx)  # the index, then the project's [artifacts] fallbacks
        paths = fetch_all(ctx.store, [(a, wheel_filename(a), places(a, [a.source])) for a in pins.values()],
                          ctx.workdir / "download", offline=ctx.offline, log=ctx.log, file=shown(ctx),
                          key="venvs", kind="wheel")
        for a in pins.values():
            link_or_copy(paths[a.sha256], wheel_dir / wheel_filename(a))
    reqs = ctx.workdir / "requirements"
    reqs.mkdir()
    for name in s.venvs:
        (reqs / f"{name}.txt").write_text(requirements_text(_venv_pins(pins, name)))
    tgt = target(ctx)

    def work(ch: Chroot) -> None:
        env = {"UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never", "UV_CACHE_DIR": CACHE_INSIDE,
               "UV_LINK_MODE": "copy", "UV_OFFLINE": "1", "PYTHONHASHSEED": "0"}
        compile_: list[tuple[str, str]] = []  # (name, path) of the venvs to byte-compile
        for name, v in sorted(s.venvs.items()):
            t = time.monotonic()
            venv = v.path
            out = ch.run([f"{UV_INSIDE}/uv", "venv", "--python", s.python, "--no-project", venv], env=env,
                         what=f"venv-{name}")
            if out.returncode != 0:
                raise BuildError(f"uv venv {venv} failed: {_uv_reason(out.text)}", file=shown(ctx), key=f"venvs.{name}")
            vp = _venv_pins(pins, name)
            if vp:
                out = ch.run([f"{UV_INSIDE}/uv", "pip", "install", "--python", f"{venv}/bin/python",
                              "--require-hashes", "--no-deps", "--no-index", "--find-links", WHEELS_INSIDE,
                              "-r", f"{REQS_INSIDE}/{name}.txt"], env=env, what=f"install-{name}")
                if out.returncode != 0:
                    raise BuildError(f"installing the wheels of venv {name} failed: {_uv_reason(out.text)}",
                                     file=shown(ctx), key=f"venvs.{name}")
            site = ch.root / venv.lstrip("/") / f"lib/python{tgt.python_version}/site-packages"
            drop_uv_cache_info(site)
            have = installed_dists(site)
            for a in vp:
                if have.get(a.name) is None:
                    raise BuildError(f"venv {name}: {a.name} {a.version} is pinned but not installed",
                                     file=shown(ctx), key=f"venvs.{name}")
            extra = sorted(set(have) - {a.name for a in vp})
            if extra:
                raise BuildError(f"venv {name}: {', '.join(extra)} installed but not pinned", file=shown(ctx),
                                 key=f"venvs.{name}")
            if s.compile_bytecode and vp:
                compile_.append((name, venv))
            # uv's lock file for concurrent use of the venv: empty, world-writable, not content.
            (ch.root / venv.lstrip("/") / ".lock").unlink(missing_ok=True)
            ctx.log(f"venv {name}: {len(vp)} wheels installed ({time.monotonic() - t:.1f} s)")
        if compile_:
            # One run for every venv: they share one interpreter (`python`), so the bytes are
            # those of `compileall` run per venv, without a start-up and process pool for each.
            t = time.monotonic()
            first = compile_[0][1]
            out = ch.run([f"{first}/bin/python", "-c", COMPILE_ALL, *(f"{venv}/lib" for _, venv in compile_)],
                         env=env, what="compile")
            if out.returncode != 0:
                names = ", ".join(n for n, _ in compile_)
                raise BuildError(f"byte-compiling the venvs ({names}) failed: {out.tail[-1] if out.tail else ''}",
                                 file=shown(ctx), key="venvs")
            ctx.log(f"byte-compiled {len(compile_)} venvs ({time.monotonic() - t:.1f} s)")

    uv_cache = ctx.workdir / "venvs-uv-cache"  # (not resolve's `uv-cache`: that one is the host uv's)
    uv_cache.mkdir(exist_ok=True)
    binds = [Bind(uv.parent, UV_INSIDE), Bind(wheel_dir, WHEELS_INSIDE), Bind(reqs, REQS_INSIDE),
             Bind(uv_cache, CACHE_INSIDE, readonly=False)]
    entries = build_in_chroot(ctx, work, binds=binds)
    return Result(entries=entries, artifacts={"tools": {"uv": uv_pin}, "wheels": pins})
