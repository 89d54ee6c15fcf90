"""`lxclayer check IMAGE.tar` applies the tar.gz rules to every layer of an OCI image, merged as
Proxmox VE 9.1 applies them, and checks what PVE needs of each layer blob (media type,
compression, diff_id). Each case is a crafted image layout; before, every one passed (exit 0)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from .conftest import run_cli
from .test_check import entry, tar_bytes

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
PLAIN = "application/vnd.oci.image.layer.v1.tar"

BASE = [
    entry("dev", "dir"),
    entry("dev/null", "char"),
    entry("etc", "dir"),
    entry("etc/hostname", data=b"ct\n"),
    entry("usr", "dir"),
    entry("usr/lib", "dir"),
    entry("lib", "symlink", link="usr/lib"),
]


def _sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def layer(entries, media_type: str = GZIP, *, blob: bytes | None = None, diff_id: str | None = None):
    tar = tar_bytes(entries)
    if blob is None:
        blob = (gzip.compress(tar, mtime=0) if media_type.endswith("+gzip")
                else zstandard.ZstdCompressor().compress(tar) if media_type.endswith("+zstd") else tar)
    return {"media_type": media_type, "blob": blob, "diff_id": diff_id or _sha(tar)}


def image(tmp_path: Path, layers: list[dict], name: str = "img.tar") -> Path:
    config = json.dumps({"created": "2025-01-01T00:00:00Z", "architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [x["diff_id"] for x in layers]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(config),
                   "size": len(config)},
        "layers": [{"mediaType": x["media_type"], "digest": _sha(x["blob"]), "size": len(x["blob"])}
                   for x in layers]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(manifest),
         "size": len(manifest)}]}).encode()
    path = tmp_path / name
    with tarfile.open(path, "w") as tf:
        def put(n: str, data: bytes) -> None:
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        put("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        put("index.json", index)
        for data in {_sha(b): b for b in (manifest, config, *(x["blob"] for x in layers))}.values():
            put(f"blobs/sha256/{_sha(data)[7:]}", data)
    return path


def check(path: Path):
    r = run_cli("check", "--json", str(path))
    return r.returncode, [(v["path"], v["rule"]) for v in json.loads(r.stdout or "[]")], r


# (upper layer's members, the (path, rule) check must report)
CASES = {
    "dotdot-name": ([entry("../../etc/passwd", data=b"x")], ("../../etc/passwd", "unsafe-name")),
    "absolute-name": ([entry("/etc/passwd", data=b"x")], ("/etc/passwd", "unsafe-name")),
    "file-through-lower-symlink": ([entry("lib/evil", data=b"x")], ("lib/evil", "below-symlink")),
    "file-through-own-symlink": ([entry("esc", "symlink", link="/etc"), entry("esc/shadow", data=b"x")],
                                 ("esc/shadow", "below-symlink")),
    "hardlink-outside": ([entry("etc/sh", "hardlink", link="../../../etc/shadow")],
                         ("etc/sh", "hardlink-target")),
    "device-outside-dev": ([entry("etc/null", "char")], ("etc/null", "device-outside-dev")),
    "id-range": ([entry("etc/big-uid", uid=70000)], ("etc/big-uid", "id-range")),
    "whiteout-dotdot": ([entry("../../.wh.x")], ("../../.wh.x", "unsafe-name")),
    "whiteout-through-symlink": ([entry("lib/.wh.libc.so")], ("lib/.wh.libc.so", "below-symlink")),
    "opaque-dotdot": ([entry("../../.wh..wh..opq")], ("../../.wh..wh..opq", "unsafe-name")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_contents_are_checked_by_the_tar_gz_rules(tmp_path, case):
    members, expected = CASES[case]
    code, found, r = check(image(tmp_path, [layer(BASE), layer(members)]))
    assert code == 1, r.stdout + r.stderr
    assert expected in found, found
    assert "[layer 2]" in r.stdout


@pytest.mark.parametrize("case", ["dotdot-name", "absolute-name", "file-through-own-symlink",
                                  "hardlink-outside", "device-outside-dev", "id-range"])
def test_the_tar_gz_and_the_image_agree(tmp_path, case):
    """The same members as a tar.gz (names with ./) and as an image layer give the same rule."""
    members, (_, rule) = CASES[case]
    base = [entry("./", "dir")] + [(_prefixed(ti), data) for ti, data in BASE]
    tar = [(_prefixed(ti), data) for ti, data in members]
    tgz = tmp_path / "t.tar.gz"
    tgz.write_bytes(gzip.compress(tar_bytes(base + tar), mtime=0))
    _, tar_found, _ = check(tgz)
    _, oci_found, _ = check(image(tmp_path, [layer(BASE), layer(members)]))
    assert rule in {r for _, r in tar_found} and rule in {r for _, r in oci_found}, (tar_found, oci_found)


def _prefixed(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    if not ti.name.startswith(("/", "..")):
        ti = _copy(ti)
        ti.name = "./" + ti.name
        if ti.type == tarfile.LNKTYPE and not ti.linkname.startswith(("/", "..")):
            ti.linkname = "./" + ti.linkname
    return ti


def _copy(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    new = tarfile.TarInfo(ti.name)
    for k in ("type", "mode", "uid", "gid", "mtime", "linkname", "size", "pax_headers"):
        setattr(new, k, getattr(ti, k))
    return new


def test_a_whiteout_deletes_a_lower_symlink_so_a_directory_may_replace_it(tmp_path):
    """Merged as PVE applies: `lib` (a symlink below) is whited out, then a directory of that name
    and a file in it are fine. Without the whiteout, the same file is below a symlink. (And the
    control for every case here: a clean image of gzip, zstd and plain layers passes.)"""
    up = [entry("etc/motd", data=b"hi\n"), entry("usr/lib/x", data=b"x")]
    path = image(tmp_path, [layer(BASE), layer(up, ZSTD), layer([entry("etc/.wh.motd")], PLAIN)], "clean.tar")
    code, found, r = check(path)
    assert (code, found) == (0, []), r.stdout + r.stderr
    fine = [entry(".wh.lib"), entry("lib", "dir"), entry("lib/x", data=b"x")]
    code, found, r = check(image(tmp_path, [layer(BASE), layer(fine)], "fine.tar"))
    assert (code, found) == (0, []), r.stdout
    code, found, _ = check(image(tmp_path, [layer(BASE), layer(fine[1:])], "bad.tar"))
    assert ("lib/x", "below-symlink") in found


def test_a_diff_id_that_does_not_match_the_layer(tmp_path):
    code, found, _ = check(image(tmp_path, [layer(BASE, diff_id=_sha(b"something else"))]))
    assert code == 1 and [r for _, r in found] == ["oci-diff-id"], found


@pytest.mark.parametrize("media_type", ["application/vnd.docker.image.rootfs.diff.tar.gzip",
                                        "application/vnd.oci.image.layer.v1.tar+bzip2",
                                        "application/octet-stream"])
def test_a_layer_media_type_pve_does_not_apply(tmp_path, media_type):
    base = layer(BASE)
    base["media_type"] = media_type
    code, found, _ = check(image(tmp_path, [base]))
    assert code == 1 and [r for _, r in found] == ["oci-media-type"], found


@pytest.mark.parametrize("typed,blob", [
    (GZIP, lambda tar: tar),
    (GZIP, lambda tar: zstandard.ZstdCompressor().compress(tar)),
    (ZSTD, lambda tar: gzip.compress(tar)),
    (PLAIN, lambda tar: gzip.compress(tar)),
])
def test_compression_must_match_the_media_type(tmp_path, typed, blob):
    code, found, _ = check(image(tmp_path, [layer(BASE, typed, blob=blob(tar_bytes(BASE)))]))
    assert code == 1 and [r for _, r in found] == ["oci-compression"], found


def test_a_second_gzip_member_is_reported_pve_reads_the_first_only(tmp_path):
    tar = tar_bytes(BASE)
    blob = gzip.compress(tar[:1024], mtime=0) + gzip.compress(tar[1024:], mtime=0)
    code, found, _ = check(image(tmp_path, [layer(BASE, blob=blob, diff_id=_sha(tar[:1024]))]))
    assert code == 1 and "oci-compression" in [r for _, r in found], found
