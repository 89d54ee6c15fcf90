"""`lxclayer publish`: a template channel signed with Debian's sq that sqv (what pveam runs)
accepts, and refuses after one byte changes; `check --pgp-cert`; bad input changes nothing."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import TEMPLATE, run_cli, write_project
from .e2e_support import require_tools

pytestmark = pytest.mark.e2e

NAME = "test-tpl_1.0-1_amd64"


def sq_key(tmp: Path, name: str) -> tuple[Path, Path]:
    require_tools("sq")
    key, cert = tmp / f"{name}.pgp", tmp / f"{name}.cert"
    subprocess.run(["sq", "key", "generate", "--userid", f"<{name}@example.org>", "--export", str(key)],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    cert.write_bytes(subprocess.run(["sq", "key", "extract-cert", str(key)], check=True,
                                    capture_output=True).stdout)
    return key, cert


def sqv(cert: Path, sig: Path, data: Path) -> subprocess.CompletedProcess:
    require_tools("sqv")
    return subprocess.run(["sqv", "--keyring", str(cert), str(sig), str(data)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("pub")
    proj = write_project(root / "p")
    (proj / "layers" / "template.toml").write_text(TEMPLATE.replace('formats = ["tar.gz"]',
                                                                    'formats = ["tar.gz", "oci"]'))
    r = run_cli("--project", str(proj), "--store", str(root / "s"), "build")
    assert r.returncode == 0, r.stderr
    return proj


def publish(proj: Path, folder: Path, key: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("--project", str(proj), "publish", str(folder), "--pgp-key", str(key), *extra)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_sqv_accepts_the_channel_and_refuses_it_after_one_byte_changes(tmp_path, project):
    key, cert = sq_key(tmp_path, "release")
    chan = tmp_path / "www" / "templates"
    r = publish(project, chan, key, "--maintainer", "Ops <ops@example.org>",
                "--infopage", "https://example.org/templates")
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in chan.iterdir())
    assert files == sorted(["SHA512SUMS", "SHA512SUMS.asc", "aplinfo.dat", "aplinfo.dat.asc", "aplinfo.dat.gz",
                            f"{NAME}.tar.gz", f"{NAME}.tar", f"{NAME}.spdx.json", f"{NAME}.intoto.json"])
    assert not [p for p in chan.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    for sig, data in (("SHA512SUMS.asc", "SHA512SUMS"), ("aplinfo.dat.asc", "aplinfo.dat")):
        ok = sqv(cert, chan / sig, chan / data)
        assert ok.returncode == 0, ok.stderr
        changed = tmp_path / data
        raw = bytearray((chan / data).read_bytes())
        raw[len(raw) // 2] ^= 0x01
        changed.write_bytes(raw)
        bad = sqv(cert, chan / sig, changed)
        assert bad.returncode != 0
    _, other_cert = sq_key(tmp_path, "other")
    assert sqv(other_cert, chan / "aplinfo.dat.asc", chan / "aplinfo.dat").returncode != 0

    s = subprocess.run(["sha512sum", "-c", "SHA512SUMS"], cwd=chan, capture_output=True, text=True)
    assert s.returncode == 0, s.stdout + s.stderr
    assert f"{NAME}.tar.gz: OK" in s.stdout and f"{NAME}.tar: OK" in s.stdout

    # pveam's index: what pveam update unpacks (zcat) is what was signed
    index = (chan / "aplinfo.dat").read_bytes()
    assert gzip.decompress((chan / "aplinfo.dat.gz").read_bytes()) == index
    records = [r for r in index.decode().split("\n\n") if r.strip()]
    assert len(records) == 1  # the tar.gz; the OCI .tar is no pveam appliance
    lines = records[0].splitlines()
    fields = dict(ln.split(": ", 1) for ln in lines if not ln.startswith(" "))
    assert {k: fields[k] for k in ("Package", "Version", "Type", "Architecture", "Location", "Maintainer",
                                   "Infopage")} == {
        "Package": "test-tpl", "Version": "1.0-1", "Type": "lxc", "Architecture": "amd64",
        "Location": f"{NAME}.tar.gz", "Maintainer": "Ops <ops@example.org>",
        "Infopage": "https://example.org/templates"}
    assert fields["OS"] and fields["Section"]
    assert fields["sha512sum"] == hashlib.sha512((chan / fields["Location"]).read_bytes()).hexdigest()
    # Description last (pve-manager's parser takes the rest of the record as its continuation)
    first_desc = next(i for i, ln in enumerate(lines) if ln.startswith("Description: "))
    assert all(ln.startswith(" ") for ln in lines[first_desc + 1:]) and len(lines) > first_desc + 1

    # lxclayer check --pgp-cert: through SHA512SUMS.asc, and FILE.asc
    c = run_cli("check", str(chan / f"{NAME}.tar.gz"), "--pgp-cert", str(cert))
    assert c.returncode == 0, c.stderr
    assert "signature ok: sha512 as in SHA512SUMS, good signature by" in c.stderr
    c = run_cli("check", str(chan / "aplinfo.dat"), "--pgp-cert", str(cert))
    assert c.returncode == 0 and "aplinfo.dat.asc: good signature by" in c.stderr, c.stderr
    c = run_cli("check", str(chan / f"{NAME}.tar.gz"), "--pgp-cert", str(other_cert))
    assert c.returncode == 1 and "signature BAD" in c.stderr, c.stderr
    copy = tmp_path / "copy"
    shutil.copytree(chan, copy)
    with open(copy / f"{NAME}.spdx.json", "ab") as f:
        f.write(b" ")
    c = run_cli("check", str(copy / f"{NAME}.spdx.json"), "--pgp-cert", str(cert))
    assert c.returncode == 1 and "sha512 differs from SHA512SUMS" in c.stderr, c.stderr


@pytest.mark.parametrize("case", ["cert-not-key", "missing-key", "garbage-key", "stale-archive", "not-a-channel"])
def test_bad_input_is_one_line_and_leaves_the_old_channel(tmp_path, project, case):
    key, cert = sq_key(tmp_path, "release")
    chan = tmp_path / "chan"
    r = publish(project, chan, key)
    assert r.returncode == 0, r.stderr
    before = snapshot(chan)
    use = key
    proj = project
    if case == "cert-not-key":
        use = cert
    elif case == "missing-key":
        use = tmp_path / "nope.pgp"
    elif case == "garbage-key":
        use = tmp_path / "garbage.pgp"
        use.write_text("not a key\n")
        os.chmod(use, 0o600)
    elif case == "stale-archive":
        proj = tmp_path / "p2"
        shutil.copytree(project, proj)
        with open(proj / "dist" / f"{NAME}.tar.gz", "ab") as f:
            f.write(b"\0")
    else:
        chan = tmp_path / "elsewhere"
        chan.mkdir()
        (chan / "index.html").write_text("<html></html>\n")
        before = snapshot(chan)
    r = publish(proj, chan, use)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("lxclayer: error:")]
    assert len(err) == 1, r.stderr
    assert snapshot(chan) == before
    assert not [p for p in chan.parent.iterdir() if p.name.startswith(".")]


def test_a_second_publish_replaces_the_channel_whole(tmp_path, project):
    key, cert = sq_key(tmp_path, "release")
    chan = tmp_path / "chan"
    assert publish(project, chan, key).returncode == 0
    (chan / "stale-file").write_text("x")  # not part of the new channel
    assert publish(project, chan, key, "--maintainer", "Someone <s@example.org>").returncode == 0
    assert not (chan / "stale-file").exists()
    assert "Maintainer: Someone <s@example.org>" in (chan / "aplinfo.dat").read_text()
    assert sqv(cert, chan / "aplinfo.dat.asc", chan / "aplinfo.dat").returncode == 0
