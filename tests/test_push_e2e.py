"""`lxclayer push`: the image and its SBOM in a real registry (Debian's docker-registry on
loopback, htpasswd auth), found again with skopeo and through the referrers fallback tag."""

from __future__ import annotations

import json
import subprocess

import pytest

from lxclayer.lock import toml as locktoml
from lxclayer.outputs.sbom import spdx_document
from lxclayer.push import SBOM_TYPE

from .conftest import run_cli, write_project
from .e2e_support import require_tools
from .registry_support import PASSWORD, USER, auth_file, registry_fixture

pytestmark = pytest.mark.e2e


registry = registry_fixture()


@pytest.fixture
def auth(tmp_path, registry):
    return auth_file(tmp_path / "auth.json", registry.address)


def _push(proj, store, ref, auth, *extra):
    return run_cli("--project", str(proj), "--store", str(store), "push", ref, "--auth", str(auth), "--json", *extra)


def test_push_sends_the_image_and_its_sbom_and_skopeo_finds_them(tmp_path, registry, auth):
    require_tools("skopeo")
    proj = write_project(tmp_path / "p")
    store = tmp_path / "s"
    b = run_cli("--project", str(proj), "--store", str(store), "build", "--format", "oci")
    assert b.returncode == 0, b.stderr
    lock = locktoml.read(proj / "locks" / "test-tpl.lock")
    ref = f"{registry.address}/templates/test-tpl"
    r = _push(proj, store, ref, auth)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["digest"] == lock.template.archives["oci"].image
    assert res["reference"] == f"{ref}:1.0-1"
    assert res["sent"] == res["blobs"] == 4  # config and three layers
    assert PASSWORD not in r.stdout + r.stderr

    creds = ["--creds", f"{USER}:{PASSWORD}", "--tls-verify=false"]
    s = subprocess.run(["skopeo", "inspect", *creds, f"docker://{ref}:1.0-1"], capture_output=True, text=True)
    assert s.returncode == 0, s.stderr
    assert json.loads(s.stdout)["Digest"] == res["digest"]

    # The SBOM, through the fallback tag distribution 2.8 needs (it has no referrers API)
    fallback = f"docker://{ref}:sha256-{res['digest'].removeprefix('sha256:')}"
    s = subprocess.run(["skopeo", "inspect", "--raw", *creds, fallback], capture_output=True, text=True)
    assert s.returncode == 0, s.stderr
    index = json.loads(s.stdout)
    assert [(m["digest"], m["artifactType"]) for m in index["manifests"]] == [
        (res["sbom"], SBOM_TYPE), (res["provenance"], "application/vnd.in-toto+json")]  # unsigned: the statement
    s = subprocess.run(["skopeo", "inspect", "--raw", *creds, f"docker://{ref}@{res['sbom']}"],
                       capture_output=True, text=True)
    assert s.returncode == 0, s.stderr
    art = json.loads(s.stdout)
    assert art["subject"]["digest"] == res["digest"]
    assert art["artifactType"] == SBOM_TYPE
    # its one layer is the SBOM dist/ holds, byte for byte
    sbom = (proj / "dist" / "test-tpl_1.0-1_amd64.spdx.json").read_bytes()
    assert sbom == spdx_document(lock)
    import hashlib
    assert art["layers"][0]["digest"] == "sha256:" + hashlib.sha256(sbom).hexdigest()
    blob = registry.blob_file(art["layers"][0]["digest"]).read_bytes()
    assert blob == sbom

    # A second push sends nothing: every blob is there, and the SBOM is listed once
    r = _push(proj, store, ref, auth)
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert again["sent"] == 0 and again["digest"] == res["digest"] and again["sbom"] == res["sbom"]
    s = subprocess.run(["skopeo", "inspect", "--raw", *creds, fallback], capture_output=True, text=True)
    assert len(json.loads(s.stdout)["manifests"]) == 2


def test_push_without_credentials_is_one_line_and_exit_1(tmp_path, registry):
    proj = write_project(tmp_path / "p")
    store = tmp_path / "s"
    assert run_cli("--project", str(proj), "--store", str(store), "build").returncode == 0
    empty = tmp_path / "none.json"
    empty.write_text('{"auths": {}}')
    r = _push(proj, store, f"{registry.address}/templates/test-tpl", empty)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "lxclayer: error:" in r.stderr and registry.address in r.stderr


def test_push_without_a_lock_says_to_build_first(tmp_path, registry, auth):
    proj = write_project(tmp_path / "p")
    r = _push(proj, tmp_path / "s", f"{registry.address}/templates/test-tpl", auth)
    assert r.returncode == 2, r.stderr
    assert "run `lxclayer build` first" in r.stderr


def test_push_reports_each_blob_sent_as_progress_events(tmp_path, registry, auth):
    """`--progress json`: one finished transfer-progress event per blob the registry lacked
    (docs/progress.md), and no credential in any of them."""
    proj = write_project(tmp_path / "p")
    store = tmp_path / "s"
    assert run_cli("--project", str(proj), "--store", str(store), "build", "--format", "oci").returncode == 0
    r = _push(proj, store, f"{registry.address}/templates/prog", auth, "--progress", "json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
    done = [e for e in events if e["event"] == "transfer-progress" and e["done"]]
    lock = locktoml.read(proj / "locks" / "test-tpl.lock")
    layers = {e["digest"] for e in done}
    assert len(layers) == len(done) == 3  # the three layer blobs (the config and the SBOM are small, sent as bytes)
    assert all(e["direction"] == "push" and e["registry"] == registry.address
               and e["bytes_done"] == e["bytes_total"] > 0 for e in done)
    assert lock.template.archives["oci"].image not in layers
    assert PASSWORD not in r.stderr
