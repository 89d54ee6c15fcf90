"""The registry client against a real registry: Debian's docker-registry (CNCF distribution 2.8)
on loopback with htpasswd auth, a fault-injecting proxy in front of it, and skopeo to check that
what we push is what other tools see."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import threading
import time
import urllib.parse

import msgspec
import pytest

from lxclayer.errors import UserError
from lxclayer.registry import (
    DigestMismatch,
    NotFound,
    RegistryAuthError,
    RegistryProtocolError,
    RegistryUnavailable,
    RetryPolicy,
    client_for,
    oci,
)

from .e2e_support import require_tools
from .registry_support import (
    PASSWORD,
    USER,
    FaultProxy,
    Registry,
    auth_file,
    blob_get,
    registry_fixture,
)

pytestmark = pytest.mark.e2e
FAST = RetryPolicy(attempts=3, first_delay=0.05, max_delay=0.2, total=5)


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


registry = registry_fixture()


@pytest.fixture
def auth(tmp_path):
    return auth_file(tmp_path / "auth.json", "127.0.0.1")


def client(address, repo, auth, **kw):
    # Auth files key registries by host:port; write one matching this address.
    data = json.loads(auth.read_text())
    data["auths"][address] = data["auths"]["127.0.0.1"]
    auth.write_text(json.dumps(data))
    return client_for(f"oci://{address}/{repo}", auth_file=auth, retry=kw.pop("retry", FAST), **kw)


@pytest.fixture
def proxy(registry):
    p = FaultProxy(registry.address)
    yield p
    p.close()


def tiny_image():
    """A one-layer OCI image: (config bytes, layer bytes, manifest bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("hello")
        ti.size, ti.mtime = 6, 1700000000
        tf.addfile(ti, io.BytesIO(b"hello\n"))
    tar = buf.getvalue()
    layer = gzip.compress(tar, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha(tar)]}}).encode()
    manifest = msgspec.json.encode(oci.Manifest(
        config=oci.Descriptor("application/vnd.oci.image.config.v1+json", sha(config), len(config)),
        layers=[oci.Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", sha(layer), len(layer))]))
    return config, layer, manifest


def test_push_then_skopeo_sees_the_same_image(registry, auth, tmp_path):
    require_tools("skopeo")
    c = client(registry.address, "interop/tiny", auth)
    c.ping()
    config, layer, manifest = tiny_image()
    assert c.push_blobs([config, layer]) == [sha(config), sha(layer)]
    digest = c.put_manifest("v1", manifest)
    assert digest == sha(manifest)
    common = ["--tls-verify=false", "--creds", f"{USER}:{PASSWORD}"]
    out = subprocess.run(["skopeo", "inspect", *common, f"docker://{registry.address}/interop/tiny:v1"],
                         check=True, capture_output=True, text=True).stdout
    info = json.loads(out)
    assert info["Digest"] == digest and info["Layers"] == [sha(layer)]
    tags = subprocess.run(["skopeo", "list-tags", *common, f"docker://{registry.address}/interop/tiny"],
                          check=True, capture_output=True, text=True).stdout
    assert json.loads(tags)["Tags"] == ["v1"]
    assert c.tags() == ["v1"]
    # And we read back exactly those bytes, by tag and by digest.
    assert c.get_manifest("v1") == (oci.MANIFEST, digest, manifest)
    assert c.get_manifest(digest)[2] == manifest
    assert c.manifest_digest("v1") == digest and c.manifest_digest("nope") is None
    dest = c.get_blob(sha(layer), tmp_path / "layer", size=len(layer))
    assert dest.read_bytes() == layer


def test_wrong_or_missing_credentials_refused_without_leaking(registry, auth, tmp_path):
    bad = tmp_path / "bad.json"
    import base64
    bad.write_text(json.dumps({"auths": {registry.address: {
        "auth": base64.b64encode(b"builder:WRONG-secret-xyz").decode()}}}))
    with pytest.raises(RegistryAuthError) as e:
        client_for(f"oci://{registry.address}/x", auth_file=bad, retry=FAST).ping()
    assert "WRONG-secret-xyz" not in str(e.value) and registry.address in str(e.value)
    empty = tmp_path / "empty.json"
    empty.write_text('{"auths": {}}')
    with pytest.raises(RegistryAuthError, match="needs credentials and none were found"):
        client_for(f"oci://{registry.address}/x", auth_file=empty, retry=FAST).ping()


def test_only_missing_blobs_are_sent(registry, auth, proxy):
    c = client(proxy.address, "dedup/repo", auth)
    blobs = [b"one" * 1000, b"two" * 1000, b"three" * 1000]
    c.push_blobs(blobs[:2])
    proxy.seen.clear()
    c.push_blobs(blobs)
    sent = [p for m, p in proxy.seen if m == "PUT"]
    assert len(sent) == 1 and sha(blobs[2]) in urllib.parse.unquote(sent[0])
    assert sorted(m for m, _ in proxy.seen if m == "HEAD") == ["HEAD"] * 3


def test_two_clients_push_the_same_blob_and_manifest_at_once(registry, auth):
    config, layer, manifest = tiny_image()
    big = bytes(range(256)) * 40000   # ~10 MB, so the uploads overlap
    errors, digests = [], []

    clients = [client(registry.address, "race/repo", auth) for _ in range(2)]

    def push(c):
        try:
            c.push_blobs([config, layer, big])
            digests.append(c.put_manifest("same", manifest))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)
    threads = [threading.Thread(target=push, args=(c,)) for c in clients]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and digests == [sha(manifest)] * 2
    assert registry.blob_file(sha(big)).read_bytes() == big


def test_referrers_use_the_fallback_tag_on_distribution_2_8(registry, auth):
    c = client(registry.address, "ref/repo", auth)
    config, layer, manifest = tiny_image()
    c.push_blobs([config, layer, b"{}"])
    subject = c.put_manifest("img", manifest)
    sbom = msgspec.json.encode(oci.Manifest(
        artifact_type="application/spdx+json",
        config=oci.Descriptor(oci.EMPTY, oci.EMPTY_DIGEST, 2),
        layers=[oci.Descriptor(oci.EMPTY, oci.EMPTY_DIGEST, 2)],
        subject=oci.Descriptor(oci.MANIFEST, subject, len(manifest))))
    sbom_digest = c.put_manifest(sha(sbom), sbom)
    c.put_manifest(sha(sbom), sbom)   # pushed twice: listed once
    refs = c.referrers(subject)
    assert [(d.digest, d.artifact_type) for d in refs] == [(sbom_digest, "application/spdx+json")]
    assert c.referrers(subject, "application/other") == []
    assert subject.replace(":", "-") in c.tags()


def test_transient_503_and_dropped_connection_are_retried(registry, auth, proxy, tmp_path):
    c = client(proxy.address, "faults/retry", auth)
    blob = b"x" * 100000
    proxy.faults = [(lambda m, p: m == "HEAD", "503"), (lambda m, p: m == "PUT", "drop"),
                    (lambda m, p: m == "POST", "429")]
    assert c.put_blob(blob) == sha(blob)
    assert registry.blob_file(sha(blob)).read_bytes() == blob
    proxy.faults = [(blob_get, "drop"), (blob_get, "503")]
    assert c.get_blob(sha(blob), tmp_path / "b").read_bytes() == blob


def test_blob_cut_in_half_is_retried_then_refused(registry, auth, proxy, tmp_path):
    tmp_path = tmp_path / "dl"
    tmp_path.mkdir()
    c = client(proxy.address, "faults/cut", auth)
    blob = bytes(range(256)) * 4000
    c.put_blob(blob)
    proxy.faults = [(blob_get, "cut")]
    assert c.get_blob(sha(blob), tmp_path / "once").read_bytes() == blob
    proxy.faults = [(blob_get, "cut")] * 5
    with pytest.raises(RegistryUnavailable, match="cut short"):
        c.get_blob(sha(blob), tmp_path / "always")
    assert list(tmp_path.iterdir()) == [tmp_path / "once"]   # no half file left anywhere


def test_wrong_bytes_are_refused_and_never_put_in_place(registry, auth, proxy, tmp_path):
    tmp_path = tmp_path / "dl"
    tmp_path.mkdir()
    c = client(proxy.address, "faults/corrupt", auth)
    blob = b"trust me" * 1000
    c.put_blob(blob)
    proxy.faults = [(blob_get, "corrupt")]
    with pytest.raises(DigestMismatch, match="refused"):
        c.get_blob(sha(blob), tmp_path / "b")
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []
    # Altered in the registry's own storage: the same.
    path = registry.blob_file(sha(blob))
    path.write_bytes(b"poisoned" * 1000)
    with pytest.raises(DigestMismatch):
        client(registry.address, "faults/corrupt", auth).get_blob(sha(blob), tmp_path / "c")
    assert list(tmp_path.iterdir()) == []
    config, layer, manifest = tiny_image()
    c.push_blobs([config, layer])
    c.put_manifest("m", manifest)
    proxy.faults = [(lambda m, p: "/manifests/" in p, "corrupt")]   # first byte '{' flipped
    with pytest.raises(RegistryProtocolError, match="manifest m is not valid JSON"):
        c.get_manifest("m")


def test_always_failing_registry_gives_a_bounded_typed_error(registry, auth, proxy):
    c = client(proxy.address, "faults/down", auth)
    proxy.always = "503"
    t = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=r"unavailable after 3 attempt\(s\): HTTP 503"):
        c.blob_exists(sha(b"x"))
    assert time.monotonic() - t < FAST.total


def test_missing_things_are_not_found(registry, auth, tmp_path):
    c = client(registry.address, "empty/repo", auth)
    assert c.tags() == [] and not c.blob_exists(sha(b"nothing"))
    with pytest.raises(NotFound):
        c.get_blob(sha(b"nothing"), tmp_path / "n")
    assert list(tmp_path.iterdir()) == [tmp_path / "auth.json"]


def test_registry_stopped_midway(tmp_path, auth):
    reg = Registry(tmp_path / "reg")
    try:
        c = client(reg.address, "stop/repo", auth)
        c.put_blob(b"before")
        reg.stop()
        with pytest.raises(RegistryUnavailable, match="connection refused"):
            c.put_blob(b"after")
        reg.start()
        assert c.put_blob(b"after") == sha(b"after")
    finally:
        reg.stop()


def test_bearer_token_flow(registry, auth, proxy, tmp_path):
    """A registry that answers 401 with a Bearer challenge: the client gets a token from the
    realm with its basic credentials, then uses the token (the proxy plays the token server)."""
    proxy.bearer_token = "tok-123"
    c = client(proxy.address, "bearer/repo", auth)
    blob = b"bearer" * 100
    assert c.put_blob(blob) == sha(blob)
    assert c.get_blob(sha(blob), tmp_path / "b").read_bytes() == blob
    assert proxy.token_requests and "service=test-registry" in proxy.token_requests[0]
    # Wrong credentials at the token service: refused, and the secret is not in the message.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"auths": {proxy.address: {"auth": "YnVpbGRlcjpXUk9ORy1zZWNyZXQ="}}}))
    with pytest.raises(RegistryAuthError, match="refused the credentials") as e:
        client_for(f"oci://{proxy.address}/bearer/repo", auth_file=bad, retry=FAST).blob_exists(sha(blob))
    assert "WRONG-secret" not in str(e.value)


def test_huge_answers_are_refused(registry, auth, proxy):
    c = client(proxy.address, "huge/repo", auth)
    proxy.faults = [(lambda m, p: "/manifests/" in p, "huge")]
    with pytest.raises(RegistryProtocolError, match="exceeds"):
        c.get_manifest("v1")
    proxy.faults = [(lambda m, p: "/tags/list" in p, "huge")]
    with pytest.raises(RegistryProtocolError, match="exceeds"):
        c.tags()


def test_cross_repository_mount_sends_no_bytes(registry, auth, proxy):
    blob = b"shared between repositories" * 1000
    client(proxy.address, "mount/a", auth).put_blob(blob)
    b = client(proxy.address, "mount/b", auth)
    proxy.seen.clear()
    assert b.put_blob(blob, mount_from="mount/a") == sha(blob)
    assert [m for m, _ in proxy.seen if m == "PUT"] == []
    assert b.blob_exists(sha(blob))


def test_unwritable_destination_is_one_line_not_a_retry(registry, auth, tmp_path, proxy):
    c = client(proxy.address, "local/fault", auth)
    c.put_blob(b"data" * 10)
    proxy.seen.clear()
    with pytest.raises(UserError, match="cannot write blob .*: No such file or directory"):
        c.get_blob(sha(b"data" * 10), tmp_path / "missing-folder" / "b")
    assert len([p for m, p in proxy.seen if m == "GET"]) == 1
