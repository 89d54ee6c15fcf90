"""The registry client without a registry: references, credentials, and what never leaks."""

from __future__ import annotations

import base64
import json

import pytest

from lxclayer.registry import (
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
    RetryPolicy,
    client_for,
    load_credentials,
    parse_reference,
)
from lxclayer.registry.auth import parse_challenge

D = "sha256:" + "ab" * 32


def test_cache_and_push_references_parse():
    r = parse_reference("oci://registry.example.com:5000/team/lxc-cache")
    assert (r.host, r.port, r.repository, r.tag, r.digest) == \
        ("registry.example.com", 5000, "team/lxc-cache", None, None)
    assert r.registry == "registry.example.com:5000"
    r = parse_reference(f"oci://localhost/cache@{D}")
    assert (r.repository, r.digest, r.loopback) == ("cache", D, True)
    r = parse_reference("ghcr.io/acme/stock-analysis:1.0-1", scheme=False)
    assert (r.host, r.port, r.repository, r.tag) == ("ghcr.io", None, "acme/stock-analysis", "1.0-1")
    assert str(r) == "ghcr.io/acme/stock-analysis:1.0-1"
    assert parse_reference("oci://[::1]:5000/c").registry == "[::1]:5000"
    assert parse_reference("oci://127.0.0.1:5000/c").loopback
    assert not parse_reference("oci://10.0.0.1:5000/c").loopback


@pytest.mark.parametrize("text,reason", [
    ("registry.example.com/Team/cache", "must be lowercase"),
    ("https://registry.example.com/cache", "only the oci:// scheme"),
    ("oci://registry.example.com", "with a registry host and a repository"),
    ("oci://registry.example.com:99999/cache", "port '99999'"),
    ("oci://registry.example.com/cache:-bad", "tag '-bad'"),
    ("oci://registry.example.com/cache@sha256:abc", "not sha256:<64 lowercase hex>"),
    ("oci://user:pw@registry.example.com/cache", "credentials do not belong"),
    ("oci://reg_istry/cache", "not a host name"),
])
def test_bad_references_are_refused_with_the_reason(text, reason):
    with pytest.raises(RegistryError) as e:
        parse_reference(text)
    assert reason in str(e.value) and e.value.exit_code == 2
    assert "pw@" not in str(e.value) or "credentials do not belong" in str(e.value)


def test_scheme_required_or_forbidden():
    with pytest.raises(RegistryError, match="expected oci://"):
        parse_reference("host.example/cache", scheme=True)
    with pytest.raises(RegistryError, match="without the oci:// scheme"):
        parse_reference("oci://host.example/cache", scheme=False)


def _auth_file(path, registry, user, secret):
    path.write_text(json.dumps({"auths": {registry: {
        "auth": base64.b64encode(f"{user}:{secret}".encode()).decode()}}}))
    return path


def test_credentials_from_explicit_file_env_and_docker_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert load_credentials("reg.example:5000") is None
    (tmp_path / ".docker").mkdir()
    _auth_file(tmp_path / ".docker/config.json", "https://reg.example:5000", "docker", "a")
    assert load_credentials("reg.example:5000").username == "docker"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(_auth_file(tmp_path / "env.json", "reg.example:5000", "env", "b")))
    assert load_credentials("reg.example:5000").username == "env"
    explicit = _auth_file(tmp_path / "explicit.json", "reg.example:5000", "explicit", "c")
    assert load_credentials("reg.example:5000", explicit).username == "explicit"
    assert load_credentials("other.example") is None
    with pytest.raises(RegistryAuthError, match="auth file not found"):
        load_credentials("reg.example:5000", tmp_path / "missing.json")


def test_secret_never_in_repr_or_errors(tmp_path, monkeypatch):
    secret = "hunter2-TOPSECRET"
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    f = _auth_file(tmp_path / "a.json", "127.0.0.1:1", "me", secret)
    creds = load_credentials("127.0.0.1:1", f)
    assert secret not in repr(creds) and secret not in str(creds)
    client = client_for("oci://127.0.0.1:1/cache", auth_file=f,
                        retry=RetryPolicy(attempts=2, first_delay=0.01, total=1))
    assert secret not in repr(client) and secret not in repr(vars(client))
    with pytest.raises(RegistryUnavailable) as e:   # nothing listens on port 1
        client.ping()
    assert "connection refused" in str(e.value) and secret not in str(e.value)
    # A broken entry names the file and key, never the value.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"auths": {"h.example": {"auth": secret}}}))
    with pytest.raises(RegistryAuthError) as e:
        load_credentials("h.example", bad)
    assert "auths.h.example.auth" in str(e.value) and secret not in str(e.value)
    bad.write_text(json.dumps({"auths": {"h.example": {"auth": 5, "password": secret}}}))
    with pytest.raises(RegistryAuthError) as e:
        load_credentials("h.example", bad)
    assert secret not in str(e.value)


def test_plain_http_only_on_loopback_or_when_asked():
    assert client_for("oci://127.0.0.1:5000/c").scheme == "http"
    assert client_for("oci://localhost:5000/c").scheme == "http"
    assert client_for("oci://reg.example/c").scheme == "https"
    assert client_for("oci://reg.example/c", insecure=True).scheme == "http"


def test_bearer_challenge_parsed():
    scheme, p = parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                                'scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert p == {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull,push"}
