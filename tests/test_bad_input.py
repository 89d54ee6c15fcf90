"""Bad input is refused with exit code 2, a message naming the place, and no traceback."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import random
import tarfile
from pathlib import Path

import pytest
import zstandard

from .conftest import base_tarball, run_cli


def edit(path: str, old: str, new: str):
    def apply(root: Path) -> None:
        f = root / path
        text = f.read_text()
        assert old in text, (path, old)
        f.write_text(text.replace(old, new, 1))
    return apply


def append(path: str, text: str):
    def apply(root: Path) -> None:
        f = root / path
        f.write_text(f.read_text() + text)
    return apply


def prepend(path: str, text: str):
    def apply(root: Path) -> None:
        f = root / path
        f.write_text(text + f.read_text())
    return apply


def write(path: str, data: bytes | str):
    def apply(root: Path) -> None:
        f = root / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data if isinstance(data, bytes) else data.encode())
    return apply


def symlink(path: str, target: str):
    def apply(root: Path) -> None:
        os.symlink(target, root / path)
    return apply


def fifo(path: str):
    def apply(root: Path) -> None:
        f = root / path
        f.unlink(missing_ok=True)
        os.mkfifo(f)
    return apply


T = "layers/template.toml"
C = "layers/config/layer.toml"
B = "layers/base/layer.toml"
E = "layers/extra/layer.toml"
LOCK = "locks/test-tpl.lock"

CASES = {
    "template not toml": (write(T, "name = \n"), ["layers/template.toml", "invalid TOML"]),
    "template not utf-8": (write(T, b"name = \"\xff\"\n"), ["layers/template.toml", "not UTF-8"]),
    "template unknown key": (append(T, "nmae = 1\n"), ["layers/template.toml: key nmae: unknown key"]),
    "template is a fifo": (fifo(T), ["layers/template.toml", "not a regular file (it is a FIFO)"]),
    "template wrong type": (edit(T, "release = 1", 'release = "one"'), ["layers/template.toml: key release", "Expected `int`"]),
    "template missing key": (edit(T, "source_date_epoch = 1700000000\n", ""), ["key source_date_epoch: required key is missing"]),
    "template bad name": (edit(T, 'name = "test-tpl"', 'name = "Test Tpl"'), ["key name", "not a valid name"]),
    "template no layers": (edit(T, 'layers = ["base", "config", "extra"]', "layers = []"), ["key layers", "no layers"]),
    "template layer twice": (edit(T, '"extra"]', '"extra", "base"]'), ["key layers[3]", "listed twice"]),
    "template missing layer": (edit(T, '"extra"]', '"extra", "ghost"]'), ["key layers[3]", "layers/ghost/layer.toml"]),
    "template bad format": (edit(T, 'formats = ["tar.gz"]', 'formats = ["tar.bz2"]'), ["key formats[0]"]),
    "layer without kind": (edit(C, 'kind = "files"\n', ""), ["layers/config/layer.toml: key kind: required key is missing"]),
    "layer kind not a string": (edit(C, 'kind = "files"', 'kind = ["files"]'), ["layers/config/layer.toml: key kind: must be a string"]),
    "layer table value wrong type": (edit(E, '= "/lib/systemd/system/redis.service"', "= 5"),
                                     ['layers/extra/layer.toml: key symlinks."etc/systemd/system/multi-user.target.wants/redis.service": Expected `str`']),
    "layer unknown kind": (edit(C, 'kind = "files"', 'kind = "docker"'), ["key kind", "unknown layer kind 'docker'"]),
    "layer unknown key": (prepend(C, "colour = 1\n"), ["layers/config/layer.toml: key colour: unknown key"]),
    "layer bad mode": (edit(C, 'mode = "0640"', 'mode = "999"'), ["key modes[0].mode", "not an octal mode"]),
    "layer rule leaves root": (edit(C, 'path = "etc/redis/*.conf"', 'path = "etc/../../x"'), ["key modes[0].path", "leaves the root"]),
    "layer delete escapes": (edit(E, 'delete = ["etc/obsolete.conf"]', 'delete = ["/../etc/shadow"]'), ["layers/extra/layer.toml: key delete[0]", "leaves the root"]),
    "layer symlink escapes": (symlink("layers/config/root/etc/evil", "../../../../../../etc/shadow"), ["layers/config/root/etc/evil", "points outside the layer folder"]),
    "layer absolute symlink": (symlink("layers/config/root/etc/abs", "/etc/shadow"), ["layers/config/root/etc/abs", "points outside the layer folder"]),
    "requires cycle": (lambda r: (edit(C, 'requires = ["base"]', 'requires = ["extra"]')(r), prepend(E, 'requires = ["config"]\n')(r)),
                       ["cycle", "config", "extra"]),
    "requires unknown": (edit(C, 'requires = ["base"]', 'requires = ["nope"]'), ["layers/config/layer.toml: key requires[0]", "'nope'"]),
    "import bad sha": (edit(B, 'sha256 = "', 'sha256 = "XYZ'), ["layers/base/layer.toml: key sha256", "64 lower-case hex"]),
    "import missing file": (edit(B, 'path = "base.tar"', 'path = "nope.tar"'), ["layers/base/layer.toml: key path", "not found"]),
    "import path escapes": (edit(B, 'path = "base.tar"', 'path = "../base/base.tar"'), ["layers/base/layer.toml: key path"]),
    "import both path and url": (prepend(B, 'url = "https://example.invalid/x.tar"\n'), ["layers/base/layer.toml", "exactly one of"]),
    "import sha mismatch": (write("layers/base/base.tar", b"not the tarball"), ["layers/base/layer.toml: key sha256", "expected"]),
    "owner name unknown": (edit(C, 'group = "redis"', 'group = "valkey"'), ["layers/config/layer.toml: key modes", "group 'valkey' does not exist"]),
    "owner id out of range": (edit(C, 'group = "redis"', "group = 70000"), ["key modes[0].group", "0..65535"]),
    "added and deleted": (append(E, ""), None),  # placeholder replaced below
    "lock not toml": (write(LOCK, "lock_version = \n"), ["locks/test-tpl.lock", "not valid TOML"]),
    "lock unknown key": (write(LOCK, 'lock_version = 1\nbogus = 2\n[template]\nname = "test-tpl"\nversion = "1.0"\n'
                                     'release = 1\narch = "amd64"\nsource_date_epoch = 1\ndefinition = "x"\n'
                                     'layers = []\n[layers]\n'), ["locks/test-tpl.lock", "bogus"]),
    "lock missing table": (write(LOCK, "lock_version = 1\n"), ["locks/test-tpl.lock", "key template"]),
    "lock is a fifo": (fifo(LOCK), ["locks/test-tpl.lock", "not a regular file (it is a FIFO)"]),
    "lock version": (write(LOCK, "lock_version = 99\n"), ["locks/test-tpl.lock", "lock_version"]),
}
CASES["added and deleted"] = (
    edit(E, 'delete = ["etc/obsolete.conf"]', 'delete = ["etc/extra.conf"]'),
    ["layers/extra/layer.toml: key delete[0]", "both added and deleted"],
)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_naming_the_place(case, project_dir, store_dir):
    mutate, expected = CASES[case]
    mutate(project_dir)
    assert_refused(project_dir, store_dir, expected)


def assert_refused(project_dir: Path, store_dir: Path, expected: list[str]) -> None:
    """`build` exits 2 with one error line holding every part of `expected`, no traceback."""
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "build")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("lxclayer: error: ")]
    assert len(errors) == 1, r.stderr
    for part in expected:
        assert part in errors[0], r.stderr
    # nothing was written where a later run would trust it
    assert not (project_dir / "dist").exists()
    layers = store_dir / "layers"
    assert not layers.exists() or len(list(layers.iterdir())) <= 3


def test_locked_and_frozen_together_is_a_usage_error(project_dir, store_dir):
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "build", "--locked", "--frozen")
    assert r.returncode == 2
    assert "exclude each other" in r.stderr


def test_no_project_here(tmp_path):
    r = run_cli("plan", cwd=tmp_path)
    assert r.returncode == 2
    assert "no templates/*.toml or layers/template.toml here or in any parent folder" in r.stderr


def test_unknown_layer_for_verify(project_dir, store_dir):
    r = run_cli("--project", str(project_dir), "--store", str(store_dir), "verify", "--rebuild", "nope")
    assert r.returncode == 2
    assert "no layer 'nope'" in r.stderr


# --- builder-side bad input (issue 15): odd names, loops, ids, damaged import tarballs --------


def _raw_name(path: bytes):
    def apply(root: Path) -> None:
        with open(os.path.join(os.fsencode(root), path), "wb") as f:
            f.write(b"x\n")
    return apply


def _tarball(data: bytes):
    """Replace the import layer's tarball, with its sha256 pinned to the new bytes."""
    def apply(root: Path) -> None:
        (root / "layers/base/base.tar").write_bytes(data)
        f = root / B
        text = f.read_text()
        old = text.split('sha256 = "')[1].split('"')[0]
        f.write_text(text.replace(old, hashlib.sha256(data).hexdigest()))
    return apply


def _tar(*members: tuple[str, str, bytes | str]) -> bytes:
    """An uncompressed tarball of (name, type, data or link target) members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tf:
        for name, type_, data in members:
            ti = tarfile.TarInfo(name)
            ti.type = type_
            if type_ == tarfile.REGTYPE:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))  # type: ignore[arg-type]
            else:
                ti.linkname = data  # type: ignore[assignment]
                tf.addfile(ti)
    return buf.getvalue()


def _gzip_with_bad_crc() -> bytes:
    gz = bytearray(gzip.compress(base_tarball(), mtime=0))
    gz[-8] ^= 0xFF  # the CRC32 of the trailer
    return bytes(gz)


IMPORT = ["layers/base/layer.toml: key path", "base.tar"]
GOOD_TAR = base_tarball()
BUILDER_CASES = {
    "layer file name not utf-8": (_raw_name(b"layers/config/root/etc/caf\xe9.conf"),
                                  ["layers/config/root/etc/caf\\xe9.conf", "not UTF-8"]),
    "layer symlink to itself": (symlink("layers/config/root/etc/self", "self"),
                                ["layers/config/root/etc/self", "loop"]),
    "layer symlink loop": (lambda r: (symlink("layers/config/root/etc/a", "b")(r), symlink("layers/config/root/etc/b", "a")(r)),
                           ["layers/config/root/etc/a", "loop"]),
    "group unicode digit": (edit(C, 'group = "redis"', 'group = "\u00b2"'),
                            ["layers/config/layer.toml: key modes[0].group", "neither an id"]),
    "group id as string out of range": (edit(C, 'group = "redis"', 'group = "70000"'),
                                        ["layers/config/layer.toml: key modes[0].group", "0..65535"]),
    "__pycache__ under root": (write("layers/config/root/etc/__pycache__/x.cpython-311.pyc", b"\0"),
                               ["layers/config/layer.toml: key root", "root/etc/__pycache__", "not be shipped"]),
    ".git under root": (write("layers/config/root/.git/HEAD", "ref: refs/heads/main\n"),
                        ["layers/config/layer.toml: key root", "root/.git", "not be shipped"]),
    "editor backup under root": (write("layers/config/root/etc/motd~", "old\n"),
                                 ["layers/config/layer.toml: key root", "root/etc/motd~"]),
    "import member leaves root": (_tarball(_tar(("./etc", tarfile.DIRTYPE, ""), ("../evil", tarfile.REGTYPE, b"x"))),
                                  [*IMPORT, "'../evil' leaves the root"]),
    "import hard link to later member": (_tarball(_tar(("./a", tarfile.LNKTYPE, "./b"), ("./b", tarfile.REGTYPE, b"x"))),
                                         [*IMPORT, "hard link './a'", "comes later"]),
    "import member name not utf-8": (_tarball(_tar(("./caf\udce9", tarfile.REGTYPE, b"x"))),
                                     [*IMPORT, "caf\\xe9", "not UTF-8"]),
    "import truncated tar.gz": (_tarball(gzip.compress(GOOD_TAR, mtime=0)[:300]), [*IMPORT, "not a readable tar archive"]),
    "import truncated tar.zst": (_tarball(zstandard.ZstdCompressor().compress(GOOD_TAR)[:300]),
                                 [*IMPORT, "not a readable tar archive"]),
    "import truncated tar.xz": (_tarball(lzma.compress(GOOD_TAR)[:300]), [*IMPORT, "not a readable tar archive"]),
    "import random bytes": (_tarball(random.Random(7).randbytes(5000)), [*IMPORT, "not a readable tar archive"]),
    "import empty file": (_tarball(b""), [*IMPORT, "not a readable tar archive"]),
    "import gzip crc fails": (_tarball(_gzip_with_bad_crc()), [*IMPORT, "CRC"]),
}


@pytest.mark.parametrize("case", sorted(BUILDER_CASES))
def test_builder_bad_input_exits_2_naming_layer_file_and_key(case, project_dir, store_dir):
    mutate, expected = BUILDER_CASES[case]
    mutate(project_dir)
    assert_refused(project_dir, store_dir, expected)


def test_import_download_failure_says_what_failed(project_dir, store_dir):
    """An HTTP error is reported as one, not as a sha256 mismatch."""
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_error(404, "Not Found")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        edit(B, 'path = "base.tar"', f'url = "http://127.0.0.1:{srv.server_port}/base.tar"')(project_dir)
        r = run_cli("--project", str(project_dir), "--store", str(store_dir), "build")
    finally:
        srv.shutdown()
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "layers/base/layer.toml: key url" in r.stderr
    assert "HTTP 404" in r.stderr
    assert "sha256" not in r.stderr
