"""Issue 20: a poisoned store entry never writes outside the store, and never stays in it.

The attacker's way in is the shared cache: an entry for a layer's input digest, consistent in
itself (its files hash to their names, its manifest to the output it claims), whose manifest
names paths that leave the root. A build without --locked pulls it; a script layer above needs
its snapshot. Each poison must be refused in one line naming the layer, the layer built here,
nothing outside the store changed (a canary folder where the escape would land, with known
modes, owners and mtimes), and the store must hold no such entry or snapshot afterwards.

Below the gate, materialise, snapshots and the boot test's whiteouts must not leave their
destination whatever a manifest says: tested by handing them poisoned manifests directly.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from lxclayer import snapshots
from lxclayer.build import build
from lxclayer.definitions import load_project
from lxclayer.digest import digest
from lxclayer.errors import BuildError, StoreCorruption
from lxclayer.manifest import Entry, sorted_entries
from lxclayer.materialise import materialise
from lxclayer.store import LayerEntry, LayerMeta, Store

from .conftest import SDE, base_tarball, run_cli, write_project
from .e2e_support import require_root, require_tools, unavailable
from .registry_support import PASSWORD, USER, registry_fixture

registry = registry_fixture()

# The escape of a snapshot: <tmp>/store/snapshots/.tmp-<pid>-<n>/root/../../../.. is <tmp>.
UP = "../../../../"
CANARY_ID = 4321


# --- the canary -------------------------------------------------------------------------------


def plant_canary(where: Path) -> Path:
    """A folder with known contents, modes, owners and mtimes where an escape would land."""
    where.mkdir()
    (where / "sub").mkdir()
    for name, data, mode in (("file", b"canary\n", 0o640), ("sub/inner", b"inner\n", 0o600),
                             ("gone", b"must stay\n", 0o644)):
        p = where / name
        p.write_bytes(data)
        os.chmod(p, mode)
    os.symlink("file", where / "link")
    for p in (where / "file", where / "sub/inner", where / "gone", where / "sub", where):
        os.lchown(p, CANARY_ID, CANARY_ID)
        os.chmod(p, 0o751) if p.is_dir() else None
        os.utime(p, (1_000_000, 1_000_000), follow_symlinks=False)
    return where


def canary_state(where: Path) -> dict[str, tuple]:
    """Every path of the canary (and the folder itself): type, mode, owner, mtime, content."""
    out = {}
    for dirpath, dirs, files in os.walk(where):
        for name in [".", *dirs, *files] if dirpath == str(where) else [*dirs, *files]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = Path(p).read_bytes() if stat.S_ISREG(st.st_mode) else (
                os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)
            out[os.path.relpath(p, where)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                                              st.st_gid, st.st_mtime_ns, data, st.st_rdev)
    return out


# --- the poisons ------------------------------------------------------------------------------
# Each: (entries of the poisoned `extra` layer given the canary folder, the path the gate names).
# A `..` or absolute path comes with its parent (the canary) as a directory entry, so that on
# code without the gate the escape writes into the canary and nowhere else (no implied parent
# directory above the canary is ever touched).


def _file(store: Store, path: str, data: bytes = b"poison\n", **kw) -> Entry:
    return Entry(path=path, type="file", mode=kw.pop("mode", 0o644), size=len(data), hash=store.put_blob(data),
                 mtime=kw.pop("mtime", SDE), **kw)


def _evil_dir(path: str) -> Entry:
    return Entry(path=path, type="dir", mode=0o700, uid=4242, gid=4242, mtime=5)


def poison_dotdot(store, canary):
    return [_evil_dir(UP + "canary"), _file(store, UP + "canary/dotdot")], "'..' component"


def poison_absolute(store, canary):
    return [_evil_dir(str(canary)), _file(store, f"{canary}/absolute")], "absolute path"


def poison_below_symlink(store, canary):
    return [Entry(path="etc", type="dir", mode=0o755, mtime=SDE),
            Entry(path="etc/evil", type="symlink", target=str(canary), mode=0o777, mtime=SDE),
            _file(store, "etc/evil/pwned")], "below-symlink"


def poison_whiteout_dotdot(store, canary):
    return [_evil_dir(UP + "canary"), Entry(path=UP + "canary/wh", type="whiteout")], "'..' component"


def poison_device_outside_dev(store, canary):
    return [Entry(path="etc", type="dir", mode=0o755, mtime=SDE),
            Entry(path="etc/kmem", type="char", mode=0o666, major=1, minor=2, mtime=SDE)], "device-outside-dev"


def poison_uid_70000(store, canary):
    return [Entry(path="etc", type="dir", mode=0o755, mtime=SDE),
            _file(store, "etc/owned", uid=70000, gid=70000)], "id-range"


def poison_hardlink(store, canary):
    # A manifest has no hard links (they are files sharing a blob): a cache that sends one
    # anyway sends a manifest this version cannot read.
    return [Entry(path="etc", type="dir", mode=0o755, mtime=SDE),
            Entry(path="etc/hl", type="hardlink", target="../../x")], "does not decode"  # type: ignore[arg-type]


POISONS = {f.__name__.removeprefix("poison_"): f for f in (
    poison_dotdot, poison_absolute, poison_below_symlink, poison_whiteout_dotdot,
    poison_device_outside_dev, poison_uid_70000, poison_hardlink)}


# --- the project: a tiny root with a real /bin/sh, and a script layer on top -------------------

LIBS = ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2")


def write_script_project(root: Path) -> Path:
    """conftest's project, its base given a working /bin/sh (the host's dash and the two
    libraries it needs), and a script layer `late` above `extra` (so `extra` needs a snapshot)."""
    require_root()
    dash = shutil.which("dash")
    if dash is None or not all(os.path.exists(p) for p in LIBS):
        unavailable("dash and the x86-64 glibc at " + ", ".join(LIBS) + " are needed for a script layer")
    proj = write_project(root)
    buf = io.BytesIO()
    src = tarfile.open(fileobj=io.BytesIO(base_tarball()))
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in src:
            tf.addfile(m, src.extractfile(m) if m.isfile() else None)
        for name, path in (("./bin", None), ("./lib", None), ("./lib/x86_64-linux-gnu", None), ("./lib64", None),
                           ("./bin/sh", dash), ("./lib/x86_64-linux-gnu/libc.so.6", LIBS[0]),
                           ("./lib64/ld-linux-x86-64.so.2", LIBS[1])):
            ti = tarfile.TarInfo(name)
            ti.mode, ti.mtime = 0o755, 1_600_000_000
            if path is None:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                data = Path(os.path.realpath(path)).read_bytes()
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    data = buf.getvalue()
    base = proj / "layers/base"
    (base / "base.tar").write_bytes(data)
    text = (base / "layer.toml").read_text()
    old = text.split('sha256 = "')[1][:64]
    (base / "layer.toml").write_text(text.replace(old, hashlib.sha256(data).hexdigest()))
    late = proj / "layers/late"
    late.mkdir()
    (late / "run.sh").write_text("echo hi > /etc/late\n")
    (late / "layer.toml").write_text('kind = "script"\nscript = "run.sh"\nrequires = ["base", "config", "extra"]\n')
    tpl = proj / "layers/template.toml"
    tpl.write_text(tpl.read_text().replace('"extra"]', '"extra", "late"]'))
    return proj


def push_poisoned(ref: str, auth: Path, input_digest: str, entries: list[Entry], scratch: Path) -> str:
    """Push an entry for `input_digest` as an attacker with push rights would: consistent in
    itself (files named by their hashes, output = digest of the manifest). Its output digest."""
    from lxclayer.registry import client_for
    from lxclayer.store.registry import RegistryCache

    with Store(scratch).session() as s:
        for e in entries:
            if e.type == "file":
                assert s.has_blob(e.hash)
        meta = LayerMeta(input=input_digest, output=digest(entries), kind="files", builder="files/1", layer="extra")
        cache = RegistryCache(client_for(ref, auth_file=auth))
        try:
            assert cache.push(LayerEntry(meta, entries), s)
        finally:
            cache.close()
    return meta.output


def _auth(path: Path, address: str) -> Path:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    path.write_text(json.dumps({"auths": {address: {"auth": token}}}))
    return path


@pytest.mark.e2e
@pytest.mark.parametrize("poison", list(POISONS))
def test_a_poisoned_cache_entry_is_refused_built_here_and_writes_nothing_outside(tmp_path, registry, poison):
    require_tools("unshare", "chroot")
    proj = write_script_project(tmp_path / "proj")
    canary = plant_canary(tmp_path / "canary")
    before = canary_state(canary)
    # The attacker knows the layer's input digest (its sources are in the project's repository).
    scout = build(load_project(proj), Store(tmp_path / "scout-store"), formats=["tar.gz"], write_lock=False)
    extra_input = next(p.input for p in scout.layers if p.name == "extra")
    shutil.rmtree(proj / "dist")
    scratch = tmp_path / "attacker-store"
    with Store(scratch).session() as s:
        entries, named = POISONS[poison](s, canary)
    if poison != "hardlink":
        entries = sorted_entries(entries)
    auth = _auth(tmp_path / "auth.json", registry.address)
    ref = f"oci://{registry.address}/poison/{poison.replace('_', '-')}"
    poisoned_output = push_poisoned(ref, auth, extra_input, entries, scratch)
    store = tmp_path / "store"
    store.mkdir()
    top_before = sorted(os.listdir(tmp_path))

    r = run_cli("--project", str(proj), "--store", str(store), "build", "--cache", ref, "--cache-auth", str(auth),
                "--cache-mode", "pull", "--json")

    # nothing outside the store changed: not the canary, nothing new beside it
    assert canary_state(canary) == before
    assert sorted(os.listdir(tmp_path)) == top_before
    # refused in one line naming the layer and the reason, built here, the build succeeds
    refusals = [ln for ln in r.stderr.splitlines() if "refused" in ln]
    assert len(refusals) == 1 and "cache: layer extra refused" in refusals[0], r.stderr
    assert named in refusals[0], refusals[0]
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert {x["name"]: x["state"] for x in report["layers"]}["extra"] == "built"
    assert report["cache"]["refused"] == ["extra"]
    # the store holds no such entry and no snapshot made from it
    with Store(store).session() as s:
        entry = s.lookup(extra_input)
        assert entry is not None and entry.output != poisoned_output
        assert not {e.path for e in entries} & {e.path for e in entry.entries if e.path != "etc"}
        for name in s.entries():
            assert s.lookup(name).output != poisoned_output
        assert snapshots.check(s, extra_input, entry.output) is None
    assert not list((store / "snapshots").glob(".tmp-*"))


def test_a_store_poisoned_before_the_gate_heals_without_writing_outside(tmp_path, monkeypatch):
    """An entry published before the gate existed (here: published with the gate switched off)
    is never written outside the store: `build --cache off` says so, removes it, builds the
    layer again and succeeds."""
    import lxclayer.entrycheck as gate

    require_tools("unshare", "chroot")
    proj = write_script_project(tmp_path / "proj")
    canary = plant_canary(tmp_path / "canary")
    before = canary_state(canary)
    scout = build(load_project(proj), Store(tmp_path / "scout-store"), formats=["tar.gz"], write_lock=False)
    extra_input = next(p.input for p in scout.layers if p.name == "extra")
    shutil.rmtree(proj / "dist")
    store = tmp_path / "store"
    with monkeypatch.context() as m, Store(store).session() as s:
        m.setattr(gate, "check_entries", lambda entries, **kw: gate.Verdict(refusals=[]))
        entries, _ = POISONS["dotdot"](s, canary)
        meta = LayerMeta(input=extra_input, output="", kind="files", builder="files/1", layer="extra")
        poisoned = s.publish(meta, sorted_entries(entries)).output
    top_before = sorted(os.listdir(tmp_path))
    r = run_cli("--project", str(proj), "--store", str(store), "build", "--cache", "off")
    assert canary_state(canary) == before
    assert sorted(os.listdir(tmp_path)) == top_before
    assert r.returncode == 0, r.stderr
    assert "entry would write outside its snapshot: refusing to write '..' outside" in r.stderr
    assert "removed from the store; building extra again" in r.stderr
    with Store(store).session() as s:
        assert s.lookup(extra_input).output != poisoned


# --- the gate itself --------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "store").session() as s:
        yield s


@pytest.mark.parametrize("poison", [p for p in POISONS if p != "hardlink"])
def test_publish_refuses_each_poison_naming_layer_and_path_and_stores_nothing(store, tmp_path, poison):
    from lxclayer.entrycheck import UnsafeEntry

    canary = plant_canary(tmp_path / "canary")
    entries, named = POISONS[poison](store, canary)
    entries = sorted_entries(entries)
    meta = LayerMeta(input="a" * 32, output="", kind="files", builder="files/1", layer="extra")
    with pytest.raises(UnsafeEntry) as e:
        store.publish(meta, entries)
    assert e.value.message().startswith("layer extra: refused by the store's entry gate: ")
    assert named in e.value.message()
    assert store.lookup("a" * 32) is None and list(store.entries()) == []


def test_the_gate_passes_what_builders_make_and_names_every_rule(store):
    from lxclayer.entrycheck import check_entries

    good = sorted_entries([
        Entry(path="dev", type="dir", mode=0o755), Entry(path="dev/null", type="char", mode=0o666, major=1, minor=3),
        Entry(path="opt", type="file", mode=0o644, size=1, hash=store.put_blob(b"x")),
        Entry(path="opt/old", type="whiteout"),  # a directory replaced by a file leaves these
        Entry(path="lib", type="symlink", target="usr/lib", mode=0o777),
        Entry(path="lib/gone", type="whiteout"),  # ... and a directory replaced by a symlink
        Entry(path="usr", type="dir", mode=0o755, implicit=True),
        Entry(path="usr/bin/ping", type="file", mode=0o4755, size=1, hash=store.put_blob(b"p"),
              xattrs={"security.capability": b"\x01"}),
        Entry(path="run/fifo", type="fifo", mode=0o600, uid=65535, gid=65535),
        Entry(path="up", type="symlink", target="../../../etc/passwd"),  # a link may point anywhere
    ])
    assert check_entries(good, blob_size=store.blob_size).ok
    h = store.put_blob(b"nine bytes"[:9])
    cases = {
        "unsafe-name": [Entry(path="a//b", type="dir"), Entry(path="./a", type="dir"), Entry(path="a/.", type="dir"),
                        Entry(path="", type="dir"), Entry(path="a\0b", type="dir"), Entry(path="x" * 256, type="dir")],
        "order": [Entry(path="b", type="dir"), Entry(path="a", type="dir"), Entry(path="a", type="file", hash=h, size=9)],
        "parent-not-dir": [Entry(path="f", type="file", hash=h, size=9), Entry(path="f/x", type="dir")],
        "type": [Entry(path="h", type="hardlink", target="f")],  # type: ignore[arg-type]
        "mode-range": [Entry(path="m", type="dir", mode=0o10000)],
        "xattr-dropped": [Entry(path="x", type="dir", xattrs={"trusted.overlay.redirect": b"/etc"})],
        "file-size": [Entry(path="s", type="file", hash=h, size=10 << 30), Entry(path="t", type="file", hash="0" * 32),
                      Entry(path="u", type="file", hash="../../x", size=1)],
        "symlink-target": [Entry(path="l", type="symlink", target="")],
        "device-number": [Entry(path="dev/x", type="block", major=1 << 33)],
    }
    for rule, entries in cases.items():
        v = check_entries(entries, blob_size=store.blob_size)
        got = {r.rule for r in v.refusals}
        assert rule in got, (rule, v.refusals)
        assert len([r for r in v.refusals if r.rule == rule]) >= (len(entries) if rule in ("unsafe-name",) else 1)
    assert "\n" not in check_entries([Entry(path="../x\nwarning: forged", type="dir")]).reason()


def test_a_layer_built_here_that_the_gate_refuses_is_an_error_naming_layer_and_path(project_dir, store_dir,
                                                                                    monkeypatch):
    """A builder's own output goes through the same gate: a files layer that made a directory
    owned by uid 70000 is an error (exit 2) naming the layer and the path; nothing published."""
    from lxclayer import build as build_mod
    from lxclayer.entrycheck import UnsafeEntry

    project = load_project(project_dir)
    real = build_mod.builder

    def poisoned_builder(kind):
        mod = real(kind)
        if kind != "files":
            return mod

        class Wrapped:
            def __getattr__(self, name):
                return getattr(mod, name)

            @staticmethod
            def realise(ctx):
                res = mod.realise(ctx)
                res.entries = sorted_entries([*res.entries, Entry(path="etc/uid", type="dir", uid=70000)])
                return res
        return Wrapped()

    monkeypatch.setattr(build_mod, "builder", poisoned_builder)
    with pytest.raises(UnsafeEntry) as e:
        build_mod.build(project, Store(store_dir))
    assert "layer config: refused by the store's entry gate: 'etc/uid': owner 70000:0" in e.value.message()
    assert e.value.exit_code == 2
    with Store(store_dir).session() as s:
        assert [s.lookup(n).meta.layer for n in s.entries()] == ["base"]


# --- defence in depth: the writers alone, given poisoned manifests -----------------------------


def _escapes(store: Store, canary: Path) -> dict[str, list[Entry]]:
    return {
        "dotdot": [_evil_dir(UP + "canary"), _file(store, UP + "canary/dotdot")],
        "absolute": [_evil_dir(str(canary)), _file(store, f"{canary}/absolute")],
        "below-symlink": [Entry(path="evil", type="symlink", target=str(canary), mode=0o777),
                          _file(store, "evil/pwned")],
        "fifo-below-symlink": [Entry(path="evil", type="symlink", target=str(canary), mode=0o777),
                               Entry(path="evil/fifo", type="fifo", mode=0o644)],
        "device-below-symlink": [Entry(path="evil", type="symlink", target=str(canary), mode=0o777),
                                 Entry(path="evil/null", type="char", mode=0o666, major=1, minor=3)],
        "symlink-below-symlink": [Entry(path="evil", type="symlink", target=str(canary), mode=0o777),
                                  Entry(path="evil/newlink", type="symlink", target="x", mode=0o777)],
        "dir-below-symlink": [Entry(path="evil", type="symlink", target=str(canary), mode=0o777),
                              Entry(path="evil/sub", type="dir", mode=0o700, uid=4242, mtime=5)],
        "whiteout-dotdot": [_evil_dir(UP + "canary"), Entry(path=UP + "canary/wh", type="whiteout")],
    }


@pytest.mark.parametrize("case", [
    "dotdot", "absolute", "below-symlink", "fifo-below-symlink", "device-below-symlink",
    "symlink-below-symlink", "dir-below-symlink", "whiteout-dotdot"])
def test_snapshots_make_never_writes_outside_its_root(store, tmp_path, case):
    """snapshots.make with a manifest that got past every gate (a store poisoned before it
    had one): damage naming the entry and the path, the canary untouched, no snapshot left."""
    require_root()
    canary = plant_canary(tmp_path / "canary")
    before = canary_state(canary)
    top_before = sorted(os.listdir(tmp_path))
    entries = sorted_entries(_escapes(store, canary)[case])
    with pytest.raises(StoreCorruption, match="would write outside its snapshot: refusing to write") as e:
        snapshots.make(store, "p" * 32, "o" * 32, entries, lambda p: None, mtime=SDE)
    assert e.value.entry == str(store.root / "layers" / ("p" * 32))  # what the build evicts
    assert canary_state(canary) == before
    assert sorted(os.listdir(tmp_path)) == top_before
    assert snapshots.check(store, "p" * 32, "o" * 32) == "missing"
    assert not list(snapshots.snapshots_dir(store).glob(".tmp-*"))


@pytest.mark.parametrize("case", ["dotdot", "absolute", "below-symlink", "device-below-symlink", "dir-below-symlink"])
def test_materialise_never_writes_outside_its_destination(store, tmp_path, case):
    require_root()
    canary = plant_canary(tmp_path / "canary")
    before = canary_state(canary)
    dest = tmp_path / "a" / "b" / "c" / "root"  # ../../../../canary from here is the canary
    entries = sorted_entries(_escapes(store, canary)[case])
    with pytest.raises(BuildError, match="refusing to write"):
        materialise(entries, dest, store)
    assert canary_state(canary) == before


def test_boot_test_whiteouts_never_delete_through_a_symlink_or_dotdot(tmp_path):
    """An OCI layer's whiteouts applied to a root whose `etc` is a symlink to the canary, or
    naming `..`: refused, the canary untouched."""
    import gzip

    from lxclayer.boottest import unpack as unpacker
    from lxclayer.errors import ArchiveError

    canary = plant_canary(tmp_path / "canary")
    before = canary_state(canary)
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(str(canary), root / "etc")
    for name, why in (("etc/.wh.gone", "passes through"), ("etc/.wh..wh..opq", None),
                      ("etc/sub/.wh..wh..opq", "passes through"), ("../canary/.wh.gone", "leaves the root"),
                      ("a/../../canary/.wh.gone", "leaves the root"), (".wh...", "leaves the root"),
                      (".wh..", "leaves the root")):  # a whiteout of "." would delete the whole root
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w") as tf:
            tf.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
        blob = io.BytesIO(gzip.compress(layer.getvalue(), mtime=0))
        if why is None:  # an opaque folder that is a symlink: nothing is emptied through it
            unpacker._apply_whiteouts(blob, ["-z"], root, tmp_path / "t.tar")
        else:
            with pytest.raises(ArchiveError, match=why):
                unpacker._apply_whiteouts(blob, ["-z"], root, tmp_path / "t.tar")
        assert canary_state(canary) == before, name
    assert os.path.islink(root / "etc")
