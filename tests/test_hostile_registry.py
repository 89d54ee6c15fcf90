"""A registry that answers with intent (tests/hostile_registry.py) never makes a build read
without bound, hang, crash or leak credentials: each case ends in one line and a correct build."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lxclayer.registry.auth import Credentials
from lxclayer.registry.errors import RegistryAuthError, RegistryError

from .conftest import run_cli, write_project
from .hostile_registry import STREAM_CAP, HostileRegistry, TokenServer

USER, SECRET = "builder", "s3cret-Hostile-pa55"


@pytest.fixture
def hostile():
    made: list[HostileRegistry] = []

    def make(mode: str, **kw) -> HostileRegistry:
        made.append(HostileRegistry(mode, **kw))
        return made[-1]

    yield make
    for h in made:
        h.close()


def _build(tmp_path: Path, url: str, *extra: str, env: dict | None = None, timeout: float = 120):
    proj = tmp_path / "proj"
    if not proj.exists():
        write_project(proj)
    t0 = time.monotonic()
    r = run_cli("--project", str(proj), "--store", str(tmp_path / "store"), "build", "--format", "tar.gz",
                "--cache", url, *extra, env={"LXCLAYER_CACHE_DEADLINE": "3", "LXCLAYER_CACHE_MODE": "pull", **(env or {})}, timeout=timeout)
    return r, time.monotonic() - t0


def _cache_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "cache" in line and "warning" in line]


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _pack_gets(h) -> list[str]:
    """The paths of the pack blobs the build asked the registry for (zstd frames)."""
    return [p for p in h.hits if "/blobs/" in p and h.blobs.get(p.rsplit("/", 1)[1], b"")[:4] == b"\x28\xb5\x2f\xfd"]


# --- refused before the bytes -------------------------------------------------------------------

def test_an_entry_made_by_another_builder_is_refused_before_its_packs_are_downloaded(tmp_path, hostile):
    """The builder is in the entry's metadata: every layer's entry is refused from it, in one
    line each, and no pack is asked for (before, every pack was downloaded, then refused)."""
    h = hostile("honest")  # well formed, made by hostile/0
    r, _ = _build(tmp_path, h.url)
    assert r.returncode == 0, r.stderr
    lines = _cache_lines(r.stderr)
    assert len(lines) == 3 and all("made by hostile/0" in line and "building it here" in line
                                   for line in lines), r.stderr
    assert any("/blobs/" in p for p in h.hits), "the metadata and manifest are read"
    assert _pack_gets(h) == [], dict(h.hits)


def test_an_entry_the_gate_refuses_is_refused_before_its_packs_are_downloaded(tmp_path, hostile):
    """Made by the right builder (the bottom layer's), consistent in itself, naming a path that
    leaves the root: the entry gate refuses it from its manifest, and no pack is asked for."""
    h = hostile("unsafe")
    r, _ = _build(tmp_path, h.url)
    assert r.returncode == 0, r.stderr
    lines = _cache_lines(r.stderr)
    assert any("layer base refused: unsafe entry: '../../etc/hostile'" in line for line in lines), r.stderr
    assert _pack_gets(h) == [], dict(h.hits)


def test_under_locked_an_entry_whose_output_is_not_the_locks_is_refused_before_its_packs(tmp_path, hostile):
    """Made by the right builder (the bottom layer's), consistent in itself, but not the lock's
    output: refused from its metadata, no pack asked for, and the locked build is the lock's."""
    proj = write_project(tmp_path / "proj")
    r = run_cli("--project", str(proj), "--store", str(tmp_path / "first"), "build", "--format", "tar.gz")
    assert r.returncode == 0, r.stderr
    archive = proj / "dist" / "test-tpl_1.0-1_amd64.tar.gz"
    made = archive.read_bytes()
    archive.unlink()
    h = hostile("ok")  # builder: import, as the `base` layer's
    r, _ = _build(tmp_path, h.url, "--locked")
    assert r.returncode == 0, r.stderr
    lines = _cache_lines(r.stderr)
    assert any("layer base refused: its output" in line and "is not the lock's" in line for line in lines), r.stderr
    assert len(lines) == 3, r.stderr
    assert _pack_gets(h) == [], dict(h.hits)
    assert archive.read_bytes() == made


# --- bounded reads ------------------------------------------------------------------------------

def test_oversized_pack_is_refused_before_it_is_read_and_never_retried(tmp_path, hostile):
    """A pack whose descriptor says 10 GiB for a file of 9 bytes is refused without a download;
    a pack whose answer says Content-Length 10 GiB is refused on its headers, once."""
    for mode in ("claim", "length"):
        h = hostile(mode)
        r, _ = _build(tmp_path / mode, h.url)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        packs = [p for p in h.hits if "/blobs/" in p and h.blobs.get(p.rsplit("/", 1)[1], b"")[:4] == b"\x28\xb5\x2f\xfd"]
        pack_bytes = sum(h.sent[p] for p in packs)
        if mode == "claim":
            assert packs == [], "a pack claiming more than its entry accounts for is never asked for"
            assert any("packs claim" in line for line in _cache_lines(r.stderr)), r.stderr
        else:
            assert all(h.hits[p] == 1 for p in packs), f"retried: {dict(h.hits)}"
            assert packs and max(h.sent[p] for p in packs) < 8 << 20 < STREAM_CAP, pack_bytes  # socket buffers
            assert any("Content-Length" in line or "bytes, its descriptor" in line
                       for line in _cache_lines(r.stderr)), r.stderr
        assert _tree_size(tmp_path / mode / "store" / "tmp") < 1 << 20


def test_zstd_bomb_member_is_refused_at_its_declared_size_without_reading_it(tmp_path, hostile):
    """A 768 MiB member (a few KB of zstd) for a file the entry says is 1 MiB: refused from its
    header. The build runs in a child whose peak memory is measured: it never holds the member."""
    h = hostile("bomb", file_size=1 << 20, bomb_size=768 << 20)
    proj = tmp_path / "proj"
    write_project(proj)
    env = dict(os.environ, LXCLAYER_CACHE_DEADLINE="10",
               PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    probe = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(r.stderr)\n"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    r = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "lxclayer", "--project", str(proj),
                        "--store", str(tmp_path / "store"), "build", "--format", "tar.gz", "--cache", h.url],
                       env=env, capture_output=True, text=True, timeout=300)
    code, maxrss_kib = (int(x) for x in r.stdout.split())
    assert code == 0, r.stderr
    assert maxrss_kib < 400 << 10, f"peak memory {maxrss_kib >> 10} MiB"
    assert any("768" in line or "805306368" in line for line in _cache_lines(r.stderr)), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("mode", ["missing", "bad-digest"])
def test_an_entry_naming_a_missing_or_malformed_blob_is_refused_and_the_build_goes_on(tmp_path, hostile, mode):
    h = hostile(mode)
    r, _ = _build(tmp_path, h.url)
    assert r.returncode == 0, r.stderr
    lines = _cache_lines(r.stderr)
    assert lines and all("refused" in line and "building it here" in line for line in lines), r.stderr
    assert (tmp_path / "proj" / "dist" / "test-tpl_1.0-1_amd64.tar.gz").is_file()


# --- deadlines and the budget ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["loris-manifest", "loris-blob"])
def test_slow_loris_ends_at_the_deadline_and_the_build_goes_on(tmp_path, hostile, mode):
    """Headers, then a byte every 2 s: the operation ends at its deadline (3 s here), the cache is
    given up in one line, the build is correct. Before, it hung without bound."""
    h = hostile(mode, trickle=2.0)
    try:
        r, took = _build(tmp_path, h.url, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the build hung on a slow-loris registry")
    assert r.returncode == 0, r.stderr
    lines = _cache_lines(r.stderr)
    assert len(lines) == 1 and "unavailable" in lines[0] and "within 3 s" in lines[0], r.stderr
    assert took < 3 + 20, took  # the deadline, plus the build itself
    assert (tmp_path / "proj" / "dist" / "test-tpl_1.0-1_amd64.tar.gz").is_file()


def test_the_cache_is_given_up_when_the_builds_budget_is_spent(tmp_path, hostile):
    """Each answer takes 1 s (within the deadline); after a budget of 2 s the cache is given up
    in one line and the build goes on without it."""
    h = hostile("slow", delay=1.0)
    r, _ = _build(tmp_path, h.url, env={"LXCLAYER_CACHE_BUDGET": "2"})
    assert r.returncode == 0, r.stderr
    lines = _cache_lines(r.stderr)
    assert len(lines) == 1 and "budget" in lines[0], r.stderr
    asked = sum(n for p, n in h.hits.items() if "/manifests/" in p)
    assert asked <= 3, dict(h.hits)


def test_bad_deadline_setting_is_refused(tmp_path, hostile):
    h = hostile("honest")
    r, _ = _build(tmp_path, h.url, env={"LXCLAYER_CACHE_DEADLINE": "soon"})
    assert r.returncode == 2 and "LXCLAYER_CACHE_DEADLINE" in r.stderr, r.stderr
    assert h.hits == {}


# --- auth ------------------------------------------------------------------------------------

@pytest.mark.parametrize("realm", ["file:///etc/passwd", "::::", "http://", "https://u:p@[::1/x"])
def test_a_realm_that_is_not_http_is_one_line_and_the_cache_is_skipped(tmp_path, hostile, realm):
    h = hostile("realm", challenge=f'Bearer realm="{realm}",service="x"')
    r, _ = _build(tmp_path, h.url)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    lines = _cache_lines(r.stderr)
    assert len(lines) == 1 and "token realm is not an http(s) URL" in lines[0], r.stderr
    assert realm not in r.stderr or realm == "::::"  # never echoed (it is the server's text)


def test_credentials_go_to_an_https_realm_elsewhere_never_plain_http_off_loopback():
    from lxclayer.registry.auth import check_realm, may_send_credentials

    reg = "registry-1.docker.io"
    assert may_send_credentials(*check_realm("https://auth.docker.io/token", reg), reg, registry_scheme="https")
    assert may_send_credentials(*check_realm("https://registry-1.docker.io/t", reg), reg, registry_scheme="https")
    assert not may_send_credentials(*check_realm("http://auth.example.com/token", reg), reg,
                                    registry_scheme="https")
    assert not may_send_credentials(*check_realm("http://10.0.0.5:5000/token", "10.0.0.5:5000"),
                                    "10.0.0.5:5000", registry_scheme="https")
    # plain HTTP: loopback, or the registry's own host when it is itself spoken to over HTTP
    assert may_send_credentials(*check_realm("http://127.0.0.1:9/token", reg), reg, registry_scheme="https")
    assert may_send_credentials(*check_realm("http://[::1]:9/token", reg), reg, registry_scheme="https")
    assert may_send_credentials(*check_realm("http://10.0.0.5:5000/t", "10.0.0.5:5000"), "10.0.0.5:5000",
                                registry_scheme="http")
    assert not may_send_credentials(*check_realm("http://10.0.0.6:5000/t", "10.0.0.5:5000"), "10.0.0.5:5000",
                                    registry_scheme="http")
    for bad in ("file:///etc/passwd", "::::", "ftp://h/x", "https:///nohost", "https://u:p@h/t"):
        with pytest.raises(RegistryAuthError) as e:
            check_realm(bad, reg)
        assert bad not in e.value.message()


def _client(port: int):
    from lxclayer.registry import client_for
    from lxclayer.registry.client import RetryPolicy

    return client_for(f"oci://127.0.0.1:{port}/team/cache", retry=RetryPolicy(deadline=5, attempts=1),
                      credentials=Credentials(USER, SECRET))


def test_credentials_reach_the_realm_on_another_host_but_not_past_a_redirect_to_a_third(hostile):
    third = TokenServer()
    realm = TokenServer(redirect_to=f"http://127.0.0.1:{third.port}/token")
    direct = TokenServer()
    basic = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
    try:
        # the realm names another host (localhost, not 127.0.0.1:PORT): credentials go there
        h = hostile("realm", challenge=f'Bearer realm="http://localhost:{direct.port}/token",service="s"')
        with _client(h.port) as c, pytest.raises(RegistryError) as e:
            c.ping()
        assert direct.seen and direct.seen[0][1] == basic
        assert SECRET not in e.value.message() and basic not in e.value.message()
        # the realm redirects to a third host: it gets no credentials
        h2 = hostile("realm", challenge=f'Bearer realm="http://localhost:{realm.port}/token",service="s"')
        with _client(h2.port) as c, pytest.raises(RegistryError):
            c.ping()
        assert realm.seen[0][1] == basic
        assert third.seen and all(auth is None for _, auth in third.seen)
    finally:
        for s in (third, realm, direct):
            s.close()


# --- cache push -------------------------------------------------------------------------------

def test_cache_push_against_a_failing_registry_is_one_line(tmp_path, hostile):
    proj = tmp_path / "proj"
    write_project(proj)
    store = tmp_path / "store"
    r = run_cli("--project", str(proj), "--store", str(store), "build", "--format", "tar.gz", "--cache", "off")
    assert r.returncode == 0, r.stderr
    h = hostile("fail")
    r = run_cli("--project", str(proj), "--store", str(store), "cache", "push", "--cache", h.url,
                env={"LXCLAYER_CACHE_DEADLINE": "3"})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unavailable" in lines[0] and "building without" not in lines[0], r.stderr


# --- --template '' ------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["command", "group"])
@pytest.mark.parametrize("name", ["", " ", "\t"])
def test_an_empty_template_name_is_refused(tmp_path, where, name):
    proj = tmp_path / "proj"
    write_project(proj)
    args = (["build", "--template", name] if where == "command" else ["--template", name, "build"])
    r = run_cli("--project", str(proj), "--store", str(tmp_path / "store"), *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "empty" in r.stderr, r.stderr
    assert not (proj / "dist").exists() and not any((proj / "locks").iterdir())
