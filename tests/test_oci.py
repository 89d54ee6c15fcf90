"""The OCI image layout tar: what PVE 9.1, skopeo and umoci read from it."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from lxclayer.build import build
from lxclayer.definitions import load_project
from lxclayer.lock import toml as locktoml
from lxclayer.oci.layout import read_layout
from lxclayer.outputs import oci
from lxclayer.store import Store

from .conftest import write_project
from .e2e_support import require_root, require_tools
from .test_pct_extract import PCT_FLAGS


def _image(project_root: Path, store_dir: Path, out: Path) -> oci.Image:
    project = load_project(project_root)
    store = Store(store_dir)
    build(project, store)
    lock = locktoml.read(project.lock_file)
    layers = [store.lookup(la.input) for la in lock.layers.values()]
    t = project.template
    return oci.write_image(layers, store, out, name=t.name, version=t.version, release=t.release,
                           arch=t.arch, mtime=t.source_date_epoch, lock_digest="sha256:" + "0" * 64)


@pytest.fixture
def image(tmp_path) -> oci.Image:
    return _image(write_project(tmp_path / "p"), tmp_path / "store", tmp_path / "dist" / "t.tar")


def _layout(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: (tf.extractfile(m).read() if m.isfile() else b"") for m in tf}


def test_layout_members_are_named_as_pve_detects_them(image):
    files = _layout(image.path)
    assert list(files)[:4] == ["oci-layout", "index.json", "blobs", "blobs/sha256"]  # tarfile drops the "/"
    assert all(n.startswith("blobs/sha256/") for n in list(files)[4:])
    for name, data in files.items():
        if name.startswith("blobs/sha256/") and data:
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    desc = index["manifests"][0]
    assert desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert "sha256:" + hashlib.sha256(files["blobs/sha256/" + desc["digest"][7:]]).hexdigest() == image.digest
    manifest = json.loads(files["blobs/sha256/" + desc["digest"][7:]])
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert [la["mediaType"] for la in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"] * 3
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"][7:]])
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["config"]["StopSignal"] == "SIGRTMIN+3"
    assert "Entrypoint" not in config["config"] and "Cmd" not in config["config"]
    assert config["config"]["Labels"]["dev.lxclayer.template"] == "test-tpl_1.0-1_amd64"
    assert config["rootfs"]["diff_ids"] == [b.diff_id for b in image.layers]


def test_deletion_is_a_whiteout_in_the_layer_that_deletes(image):
    files = _layout(image.path)
    top = files["blobs/sha256/" + image.layers[2].digest[7:]]
    import gzip
    import io
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(top))) as tf:
        names = tf.getnames()
    assert "./etc/.wh.obsolete.conf" in names
    assert "./etc/extra.conf" in names
    assert not any(n.startswith("./etc/passwd") for n in names)  # only this layer's own paths


def test_same_image_digest_from_two_empty_stores(tmp_path):
    a = _image(write_project(tmp_path / "a"), tmp_path / "s1", tmp_path / "d1" / "t.tar")
    b = _image(write_project(tmp_path / "b"), tmp_path / "s2", tmp_path / "d2" / "t.tar")
    assert a.digest == b.digest
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.reused == 0


def test_blobs_are_reused_from_the_store(tmp_path):
    proj = write_project(tmp_path / "a")
    first = _image(proj, tmp_path / "s", tmp_path / "d1" / "t.tar")
    again = _image(proj, tmp_path / "s", tmp_path / "d2" / "t.tar")
    assert again.reused == 3
    assert again.path.read_bytes() == first.path.read_bytes()


def test_a_layer_blob_depends_only_on_that_layer(tmp_path):
    a = _image(write_project(tmp_path / "a"), tmp_path / "s1", tmp_path / "d1" / "t.tar")
    proj = write_project(tmp_path / "b")
    (proj / "layers" / "extra" / "root" / "etc" / "extra.conf").write_text("extra = 2\n")
    b = _image(proj, tmp_path / "s2", tmp_path / "d2" / "t.tar")
    assert [x.digest for x in a.layers[:2]] == [x.digest for x in b.layers[:2]]
    assert a.layers[2].digest != b.layers[2].digest


def _tree(root: Path) -> dict[str, tuple]:
    """Everything a user could tell apart in an unpacked root file system."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            xattrs = {}
            if not stat.S_ISLNK(st.st_mode):
                xattrs = {k: os.getxattr(p, k) for k in os.listxattr(p)
                          if k == "security.capability" or k.startswith("user.")}
            out[rel] = (
                stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_uid, st.st_gid,
                os.readlink(p) if stat.S_ISLNK(st.st_mode) else None,
                hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None,
                st.st_nlink if stat.S_ISREG(st.st_mode) else None,
                (os.major(st.st_rdev), os.minor(st.st_rdev)) if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else None,
                tuple(sorted(xattrs.items())),
            )
    return out


@pytest.mark.e2e
def test_skopeo_reads_and_copies_the_archive(image, tmp_path):
    require_tools("skopeo")
    r = subprocess.run(["skopeo", "inspect", f"oci-archive:{image.path}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["Digest"] == image.digest
    assert info["Layers"] == [b.digest for b in image.layers]
    dest = tmp_path / "copied"
    r = subprocess.run(["skopeo", "copy", f"oci-archive:{image.path}", f"oci:{dest}:t"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for b in image.layers:
        assert (dest / "blobs" / "sha256" / b.digest[7:]).exists()


@pytest.mark.e2e
def test_umoci_unpack_equals_the_tar_gz_extracted_as_pct_does(tmp_path):
    require_root()
    require_tools("skopeo", "umoci", "tar")
    proj = write_project(tmp_path / "p")
    image = _image(proj, tmp_path / "store", tmp_path / "dist" / "t.tar")
    archive = proj / "dist" / "test-tpl_1.0-1_amd64.tar.gz"
    pct = tmp_path / "pct"
    pct.mkdir()
    with open(archive, "rb") as f:
        r = subprocess.run(["tar", "xpf", "-", "-z", *PCT_FLAGS, "-C", str(pct)], stdin=f, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    layout = tmp_path / "layout"
    r = subprocess.run(["skopeo", "copy", f"oci-archive:{image.path}", f"oci:{layout}:t"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    bundle = tmp_path / "bundle"
    r = subprocess.run(["umoci", "unpack", "--image", f"{layout}:t", str(bundle)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = _tree(bundle / "rootfs")
    want = _tree(pct)
    # pct leaves /dev to LXC (`--exclude ./dev/*`); the image carries it as the tar.gz does
    got = {k: v for k, v in got.items() if not k.startswith("dev/")}
    assert got == want
    assert got["usr/bin/ping"][8]  # the capability is there, in both
    assert "etc/obsolete.conf" not in got


# --- the `oci` output format, through build, the lock, gc and the CLI ---------------------------

def _build_oci(project_root: Path, store_dir: Path, *extra: str):
    from .conftest import run_cli

    return run_cli("--project", str(project_root), "--store", str(store_dir), "build", "--format", "oci",
                   "--format", "tar.gz", *extra)


def test_build_format_oci_writes_the_image_and_records_its_digest(tmp_path):
    proj = write_project(tmp_path / "p")
    r = _build_oci(proj, tmp_path / "s")
    assert r.returncode == 0, (r.stdout + r.stderr)
    path = proj / "dist" / "test-tpl_1.0-1_amd64.tar"
    lock = locktoml.read(proj / "locks" / "test-tpl.lock")
    rec = lock.template.archives["oci"]
    assert rec.file == path.name
    assert rec.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    layout = read_layout(path)
    assert rec.image == layout.manifest_digest
    assert f"image {rec.image}" in (r.stdout + r.stderr)
    assert lock.template.compressor["oci"] == oci.compressor_id()
    # the image is labelled with the digest of the lock's stack (the lock without its archives)
    assert layout.config.config.Labels["dev.lxclayer.lock"] == locktoml.stack_digest(lock)
    assert layout.config.config.StopSignal == "SIGRTMIN+3"
    assert [h.created_by for h in layout.config.history] == [f"lxclayer layer {n}" for n in lock.layers]
    # a second, empty store gives the same bytes
    other = write_project(tmp_path / "q")
    assert _build_oci(other, tmp_path / "s2").returncode == 0
    assert (other / "dist" / path.name).read_bytes() == path.read_bytes()


def test_oci_no_op_build_reuses_the_image_and_gc_keeps_its_blobs(tmp_path):
    proj = write_project(tmp_path / "p")
    store = tmp_path / "s"
    assert _build_oci(proj, store).returncode == 0
    from .conftest import run_cli

    r = run_cli("--project", str(proj), "--store", str(store), "gc")
    assert r.returncode == 0, (r.stdout + r.stderr)
    r = _build_oci(proj, store, "--locked")
    assert r.returncode == 0, (r.stdout + r.stderr)
    assert "up to date test-tpl_1.0-1_amd64.tar" in (r.stdout + r.stderr)
    # the image gone from dist/: remade from the blobs gc kept, none compressed again
    (proj / "dist" / "test-tpl_1.0-1_amd64.tar").unlink()
    r = _build_oci(proj, store, "--locked")
    assert r.returncode == 0, (r.stdout + r.stderr)
    assert "(3 of 3 layer blobs reused)" in (r.stdout + r.stderr)


def test_lock_diff_shows_a_changed_image_digest(tmp_path):
    from lxclayer.lock import diff as lockdiff

    proj = write_project(tmp_path / "p")
    assert _build_oci(proj, tmp_path / "s").returncode == 0
    old = locktoml.read(proj / "locks" / "test-tpl.lock")
    (proj / "layers" / "extra" / "root" / "etc" / "extra.conf").write_text("extra = 2\n")
    assert _build_oci(proj, tmp_path / "s").returncode == 0
    new = locktoml.read(proj / "locks" / "test-tpl.lock")
    assert old.template.archives["oci"].image != new.template.archives["oci"].image
    lines = [lockdiff.where(c) + ": " + lockdiff.body(c) for c in lockdiff.diff(old, new)]
    assert any(line.startswith("oci: ") and f"image {old.template.archives['oci'].image} → "
               f"{new.template.archives['oci'].image}" in line for line in lines), lines


def test_check_refuses_a_layout_pve_would_not_detect(tmp_path):
    import io

    from .conftest import run_cli

    bad = tmp_path / "t.tar"
    with tarfile.open(bad, "w") as tf:
        for name, data in (("./oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("./index.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    r = run_cli("check", str(bad))
    assert r.returncode == 1, (r.stdout + r.stderr)
    assert "no member named exactly 'oci-layout'" in (r.stdout + r.stderr)


@pytest.mark.e2e
def test_boot_test_unpacks_the_image_as_pve_9_1_does_into_the_same_tree_as_the_tar_gz(tmp_path):
    """Layers in diff_ids order, whiteouts applied, in the user namespace: the same root file
    system as the tar.gz unpacked as `pct create` does (both by the boot test's unpacker)."""
    from lxclayer.boottest import unpack as unpacker

    require_root()
    require_tools("lxc-usernsexec", "tar")
    unpacker.ensure_subids()
    proj = write_project(tmp_path / "p")
    assert _build_oci(proj, tmp_path / "s").returncode == 0
    image = proj / "dist" / "test-tpl_1.0-1_amd64.tar"
    import shutil
    import tempfile

    ws = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="lxclayer-oci-test."))
    try:
        os.chmod(ws, 0o711)  # the mapped root must reach the folders it unpacks into
        unpacker.unpack(image, ws / "from-oci")
        unpacker.unpack(proj / "dist" / "test-tpl_1.0-1_amd64.tar.gz", ws / "from-tgz")
        got, want = _tree(ws / "from-oci"), _tree(ws / "from-tgz")
    finally:
        shutil.rmtree(ws)
    assert got == want
    assert "etc/obsolete.conf" not in got  # deleted by a whiteout in the top layer
    assert got["etc/redis/redis.conf"][2] >= unpacker.MAPPED_ROOT  # owned inside the user namespace


def test_boot_test_refuses_an_image_whose_whiteout_leaves_the_root(tmp_path):
    import gzip
    import io

    from lxclayer.boottest import unpack as unpacker
    from lxclayer.errors import ArchiveError

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tf:
        info = tarfile.TarInfo("etc/../../.wh.passwd")
        tf.addfile(info, io.BytesIO(b""))
    blob = gzip.compress(layer.getvalue(), mtime=0)
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ArchiveError, match="leaves the root file system"):
        unpacker._apply_whiteouts(io.BytesIO(blob), ["-z"], root, tmp_path / "t.tar")


def test_layer_blobs_made_while_the_layers_build_give_the_image_made_after_them(tmp_path):
    """A build with the image among its formats makes each built layer's blob while the layers
    above it build (outputs/ahead.py); the image is byte for byte the one made from the same
    layers all at the end, and the build says how many blobs it made ahead."""
    from .conftest import run_cli

    ahead = write_project(tmp_path / "a")
    r = _build_oci(ahead, tmp_path / "s1")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "(0 of 3 layer blobs reused, 3 made while the layers built)" in out
    # the same layers built first without the image (nothing ahead), the image composed after
    after = write_project(tmp_path / "b")
    r = run_cli("--project", str(after), "--store", str(tmp_path / "s2"), "build", "--format", "tar.gz")
    assert r.returncode == 0, (r.stdout + r.stderr)
    r = _build_oci(after, tmp_path / "s2")
    assert r.returncode == 0, (r.stdout + r.stderr)
    assert "(0 of 3 layer blobs reused)" in (r.stdout + r.stderr)
    name = "test-tpl_1.0-1_amd64.tar"
    assert (ahead / "dist" / name).read_bytes() == (after / "dist" / name).read_bytes()
    r = run_cli("--project", str(ahead), "--store", str(tmp_path / "s1"), "build", "--format", "oci",
                "--format", "tar.gz", "--json")
    assert r.returncode == 0, r.stderr
    oci_report = next(a for a in json.loads(r.stdout)["archives"] if a["format"] == "oci")
    assert (oci_report["composed"], oci_report["ahead"]) == (False, 0)


def test_a_layer_blob_stopped_halfway_leaves_nothing_in_the_store(tmp_path):
    """Work ahead is cancelled when a build ends first: the blob in the making is dropped, and
    no record claims it (the export would make it whole)."""
    import threading

    from lxclayer.outputs.base import Cancelled

    proj = write_project(tmp_path / "p", size_mb=3)
    store = Store(tmp_path / "s")
    build(load_project(proj), store)
    lock = locktoml.read(proj / "locks" / "test-tpl.lock")
    layers = [store.lookup(la.input) for la in lock.layers.values()]
    stop = threading.Event()
    stop.set()
    bottom, below = next(oci.layer_keys(layers, 0))
    with store.session(), pytest.raises(Cancelled):
        oci._layer_blob(bottom, below, store, 0, stop=stop)
    assert store.get_chunk(oci._layer_record(bottom, below, 0)[1]) is None
    assert not [p for p in (tmp_path / "s" / "tmp").iterdir() if p.name.startswith("oci-")]
