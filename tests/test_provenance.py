"""SLSA provenance v1 (`dist/<template>.intoto.json`): what it lists comes from the lock alone
(plus the project's git commit), so the same lock and commit give the same bytes."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

from lxclayer.lock import toml as locktoml
from lxclayer.lock.toml import stack_digest
from lxclayer.outputs.provenance import GitSource, provenance_document

from .conftest import run_cli, write_project

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "locks" / "debian-13-stock-analysis.lock"


def _pins(lock_file: Path) -> set[tuple[str, str]]:
    """(name, sha256) of every .deb, wheel and tool the lock pins, read from the TOML directly."""
    doc = tomllib.loads(lock_file.read_text())
    out = set()
    for layer in doc["layers"].values():
        for kind in ("packages", "wheels", "tools"):
            for key, a in layer.get("artifacts", {}).get(kind, {}).items():
                out.add((a.get("name", key), a["sha256"]))
    return out


def test_the_default_templates_provenance_lists_exactly_the_locks_pins():
    lock = locktoml.read(LOCK)
    source = GitSource(commit="0" * 40, dirty=False)
    doc = json.loads(provenance_document(lock, source))
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    deps = doc["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert {(d["name"], d["digest"]["sha256"]) for d in deps} == _pins(LOCK)
    assert len(deps) == len({(d["name"], d["digest"]["sha256"]) for d in deps}) > 150  # each once
    # every .deb by its Debian archive URL, every wheel by its PyPI URL
    assert all(d["uri"].startswith(("https://deb.debian.org/debian", "https://files.pythonhosted.org/"))
               for d in deps), [d for d in deps if not d["uri"].startswith("https://")][:3]
    arch = lock.template.archives
    assert {(s["name"], s["digest"]["sha256"]) for s in doc["subject"]} == {
        (arch["tar.gz"].file, arch["tar.gz"].sha256),
        (arch["oci"].file, arch["oci"].sha256),
        ("debian-13-stock-analysis:1.0.0-1", arch["oci"].image.removeprefix("sha256:")),
    }
    internal = doc["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["lock"] == stack_digest(lock)
    assert internal["source"] == {"commit": "0" * 40, "dirty": False}
    assert doc["predicate"]["runDetails"]["metadata"]["startedOn"] == "2025-11-25T00:00:00Z"
    # canonical: the same lock gives the same bytes, and no source means no source field
    assert provenance_document(lock, source) == provenance_document(locktoml.read(LOCK), source)
    assert "source" not in json.loads(provenance_document(lock, None))["predicate"]["buildDefinition"][
        "internalParameters"]


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@invalid", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_two_empty_stores_give_the_same_provenance_bytes_with_the_commit(tmp_path):
    proj = write_project(tmp_path / "p")
    _git(proj, "init", "-q")
    first = run_cli("--project", str(proj), "--store", str(tmp_path / "s0"), "build")
    assert first.returncode == 0, first.stderr
    name = "test-tpl_1.0-1_amd64.intoto.json"
    # the lock was just written and is not committed: the tree is not the commit's
    _git(proj, "add", "-A")
    _git(proj, "commit", "-qm", "x")
    head = _git(proj, "rev-parse", "HEAD")
    outs = []
    for i in (1, 2):
        out = tmp_path / f"out{i}"
        r = run_cli("--project", str(proj), "--store", str(tmp_path / f"s{i}"), "build", "--locked", "--out", str(out))
        assert r.returncode == 0, r.stderr
        outs.append((out / name).read_bytes())
    assert outs[0] == outs[1]
    doc = json.loads(outs[0])
    assert doc["predicate"]["buildDefinition"]["internalParameters"]["source"] == {"commit": head, "dirty": False}
    assert [s["name"] for s in doc["subject"]] == ["test-tpl_1.0-1_amd64.tar.gz"]
    # an uncommitted edit is recorded as dirty
    (proj / "layers" / "config" / "root" / "etc" / "motd").write_text("changed\n")
    r = run_cli("--project", str(proj), "--store", str(tmp_path / "s1"), "build", "--out", str(tmp_path / "out3"))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out3" / name).read_bytes())
    assert doc["predicate"]["buildDefinition"]["internalParameters"]["source"] == {"commit": head, "dirty": True}


def test_a_noop_build_does_not_rewrite_the_provenance(tmp_path):
    proj = write_project(tmp_path / "p")
    assert run_cli("--project", str(proj), "--store", str(tmp_path / "s"), "build").returncode == 0
    path = proj / "dist" / "test-tpl_1.0-1_amd64.intoto.json"
    before = path.stat()
    r = run_cli("--project", str(proj), "--store", str(tmp_path / "s"), "build")
    assert r.returncode == 0, r.stderr
    after = path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    # not a git checkout: no source recorded
    doc = json.loads(path.read_bytes())
    assert "source" not in doc["predicate"]["buildDefinition"]["internalParameters"]


def test_a_dsse_envelope_verifies_with_the_public_key_and_check_reads_it(tmp_path):
    """Signed with a key from `key generate`, checked with `cryptography` directly over the PAE,
    deterministic (same key and statement: same bytes), refused by another key or one changed byte."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from lxclayer.trust import dsse, keys

    for name in ("k", "other"):
        assert run_cli("key", "generate", str(tmp_path / name)).returncode == 0
    key = keys.load_private(tmp_path / "k")
    body = provenance_document(locktoml.read(LOCK), None)
    env_bytes = dsse.sign(key, body)
    assert dsse.sign(key, body) == env_bytes  # RFC 6979
    env = json.loads(env_bytes)
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(env["payload"]) == body
    pub = serialization.load_pem_public_key((tmp_path / "k.pub").read_bytes())
    pae = b"DSSEv1 28 application/vnd.in-toto+json %d %s" % (len(body), body)
    pub.verify(base64.b64decode(env["signatures"][0]["sig"]), pae, ec.ECDSA(hashes.SHA256()))  # raises if bad
    f = tmp_path / "x.intoto.dsse.json"
    f.write_bytes(env_bytes)
    ok = run_cli("check", str(f), "--key", str(tmp_path / "k.pub"))
    assert ok.returncode == 0 and "signature ok: DSSE envelope signed by the key" in ok.stderr, ok.stderr
    bad = run_cli("check", str(f), "--key", str(tmp_path / "other.pub"))
    assert bad.returncode == 1 and "NOT signed by the key" in bad.stderr, bad.stderr
    tampered = json.loads(env_bytes)
    tampered["payload"] = base64.b64encode(body[:100] + bytes([body[100] ^ 1]) + body[101:]).decode()  # one byte
    f.write_bytes(json.dumps(tampered).encode())
    assert run_cli("check", str(f), "--key", str(tmp_path / "k.pub")).returncode == 1
