"""The SBOM: SPDX 2.3 JSON made from the lock alone, checked with the SPDX project's validator."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import msgspec
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from lxclayer.lock import Artifact, LockedArchive, Lockfile
from lxclayer.lock import toml as locktoml
from lxclayer.lock.toml import stack_digest
from lxclayer.outputs.sbom import deb_purl, pypi_purl, sbom_filename, spdx_document

LOCK = Path(__file__).resolve().parent.parent / "locks" / "debian-12-stock-analysis.lock"


def _lock() -> Lockfile:
    lock = locktoml.read(LOCK)
    assert lock is not None
    return lock


def _validate(data: bytes) -> list[str]:
    doc = JsonLikeDictParser().parse(json.loads(data))
    return [m.validation_message for m in validate_full_spdx_document(doc, "SPDX-2.3")]


def _packages(data: bytes) -> dict[str, dict[str, Any]]:
    """The SBOM's packages other than the template, by SPDXID."""
    doc = json.loads(data)
    (described,) = [r["relatedSpdxElement"] for r in doc["relationships"]
                    if r["relationshipType"] == "DESCRIBES"]
    return {p["SPDXID"]: p for p in doc["packages"] if p["SPDXID"] != described}


def _purl(p: dict[str, Any]) -> str:
    (ref,) = [r["referenceLocator"] for r in p["externalRefs"] if r["referenceType"] == "purl"]
    return ref


def _by_name(data: bytes, name: str) -> dict[str, Any]:
    (p,) = [p for p in _packages(data).values() if p["name"] == name]
    return p


def _with_artifact(lock: Lockfile, layer: str, kind: str, name: str, a: Artifact) -> Lockfile:
    """`lock` with one artifact of one layer set to `a` (a new lock; `lock` is left alone)."""
    layers = dict(lock.layers)
    arts = {k: dict(v) for k, v in layers[layer].artifacts.items()}
    arts.setdefault(kind, {})[name] = a
    layers[layer] = msgspec.structs.replace(layers[layer], artifacts=arts)
    return msgspec.structs.replace(lock, layers=layers)


def test_sbom_of_the_committed_lock_is_valid_spdx_2_3():
    data = spdx_document(_lock())
    assert _validate(data) == []
    doc = json.loads(data)
    assert doc["spdxVersion"] == "SPDX-2.3"
    assert doc["creationInfo"]["created"] == "2025-11-25T00:00:00Z"  # SOURCE_DATE_EPOCH 1764028800
    assert doc["creationInfo"]["creators"] == ["Tool: lxclayer-0.1.0"]
    # named after the stack digest, the one the OCI image's `dev.lxclayer.lock` label carries
    assert doc["documentNamespace"] == ("https://lxclayer.invalid/spdx/debian-12-stock-analysis-1.0.0-1-"
                                        + stack_digest(_lock()).removeprefix("sha256:"))
    (template,) = [p for p in doc["packages"] if p["SPDXID"] not in _packages(data)]
    assert (template["name"], template["versionInfo"], template["primaryPackagePurpose"]) == \
        ("debian-12-stock-analysis", "1.0.0-1", "CONTAINER")
    contained = {r["relatedSpdxElement"] for r in doc["relationships"]
                 if r["relationshipType"] == "CONTAINS" and r["spdxElementId"] == template["SPDXID"]}
    assert contained == set(_packages(data))
    # SPDX 2.3 takes a missing filesAnalyzed as true, which needs a file list (the validator
    # does not catch it), so every package says false.
    assert {p.get("filesAnalyzed") for p in doc["packages"]} == {False}
    assert data.endswith(b"}\n")


def test_pyspdxtools_cli_accepts_the_sbom_file(tmp_path):
    lock = _lock()
    f = tmp_path / sbom_filename(lock)
    f.write_bytes(spdx_document(lock))
    cli = Path(sys.executable).parent / "pyspdxtools"
    r = subprocess.run([cli, "-i", f], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_sbom_lists_exactly_the_locks_debs_wheels_and_uv():
    # The expected set straight from the TOML, not through lxclayer's model or dedupe.
    raw = tomllib.loads(LOCK.read_text())
    expected = set()
    for layer in raw["layers"].values():
        arts = layer.get("artifacts", {})
        for key, a in arts.get("packages", {}).items():
            expected.add((key, a["version"], a["sha256"]))
        for key, a in [*arts.get("wheels", {}).items(), *arts.get("tools", {}).items()]:
            expected.add((a.get("name", key), a["version"], a["sha256"]))
    assert ("uv", "0.13.9", "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19") in expected
    assert len(expected) > 200

    got = [(p["name"], p["versionInfo"], p["checksums"][0]["checksumValue"])
           for p in _packages(spdx_document(_lock())).values()]
    assert len(got) == len(set(got))  # each once
    assert set(got) == expected


def test_deb_package_has_purl_pool_url_and_source_package():
    data = spdx_document(_lock())
    bsdutils = _by_name(data, "bsdutils")
    assert _purl(bsdutils) == "pkg:deb/debian/bsdutils@1%3A2.38.1-5%2Bdeb12u3?arch=amd64&distro=debian-12"
    assert bsdutils["versionInfo"] == "1:2.38.1-5+deb12u3"
    assert bsdutils["downloadLocation"] == \
        "https://deb.debian.org/debian/pool/main/u/util-linux/bsdutils_2.38.1-5+deb12u3_amd64.deb"
    assert bsdutils["sourceInfo"] == "built from the Debian source package util-linux"
    assert bsdutils["supplier"] == "Organization: Debian"
    assert bsdutils["checksums"] == [{"algorithm": "SHA256", "checksumValue":
                                      "6cae172b006a4603e710e046c3acba8d98d36748894cbe3eeda31d415fec331e"}]
    # a security update is fetched from the security archive
    libpq = _by_name(data, "libpq5")
    assert libpq["downloadLocation"] == ("https://deb.debian.org/debian-security/pool/updates/main/"
                                         "p/postgresql-15/libpq5_15.20-0+deb12u1_amd64.deb")
    assert libpq["sourceInfo"] == "built from the Debian source package postgresql-15"
    # `~` is unreserved in a purl and stays as it is
    assert _purl(_by_name(data, "ca-certificates")) == \
        "pkg:deb/debian/ca-certificates@20250419~deb12u2?arch=all&distro=debian-12"


def test_wheel_package_has_pypi_purl_and_its_url():
    data = spdx_document(_lock())
    p = _by_name(data, "typing-extensions")
    assert _purl(p) == "pkg:pypi/typing-extensions@4.16.0"
    assert p["downloadLocation"].startswith("https://files.pythonhosted.org/packages/")
    assert p["downloadLocation"].endswith("/typing_extensions-4.16.0-py3-none-any.whl")
    assert _purl(_by_name(data, "uv")) == "pkg:pypi/uv@0.13.9"


def test_purl_encoding():
    assert deb_purl("bsdutils", "1:2.38.1-5+deb12u3", "amd64", "debian-12") == \
        "pkg:deb/debian/bsdutils@1%3A2.38.1-5%2Bdeb12u3?arch=amd64&distro=debian-12"
    assert deb_purl("libstdc++6", "12.2.0-14~x", "amd64", None) == \
        "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14~x?arch=amd64"
    assert pypi_purl("Typing_Extensions", "4.16.0+local") == "pkg:pypi/typing-extensions@4.16.0%2Blocal"
    assert pypi_purl("zope.interface", "6.0") == "pkg:pypi/zope-interface@6.0"


def test_same_lock_same_bytes_and_a_changed_version_changes_them():
    first, second = spdx_document(_lock()), spdx_document(_lock())
    assert first == second

    lock = _lock()
    old = lock.layers["base-os"].artifacts["packages"]["bsdutils"]
    changed = _with_artifact(lock, "base-os", "packages", "bsdutils",
                             msgspec.structs.replace(old, version="1:2.38.1-5+deb12u4"))
    data = spdx_document(changed)
    assert data != first
    assert _purl(_by_name(data, "bsdutils")) == \
        "pkg:deb/debian/bsdutils@1%3A2.38.1-5%2Bdeb12u4?arch=amd64&distro=debian-12"
    assert json.loads(data)["documentNamespace"] != json.loads(first)["documentNamespace"]
    assert _validate(data) == []


def test_bytes_do_not_depend_on_the_order_the_lock_lists_artifacts_in():
    lock = _lock()
    layers = {name: msgspec.structs.replace(layer, artifacts={
        kind: dict(reversed(group.items())) for kind, group in reversed(layer.artifacts.items())})
        for name, layer in lock.layers.items()}
    assert spdx_document(msgspec.structs.replace(lock, layers=layers)) == spdx_document(lock)


def test_a_wheel_pinned_under_two_spellings_is_one_package_whatever_the_order():
    lock = _lock()
    venvs = lock.layers["services-venvs"]
    wheels = venvs.artifacts["wheels"]
    odd = {"extra/Typing_Extensions": msgspec.structs.replace(
        wheels["frontend/typing-extensions"], name="Typing_Extensions")}

    def with_wheels(w: dict[str, Artifact]) -> bytes:
        layer = msgspec.structs.replace(venvs, artifacts={**venvs.artifacts, "wheels": w})
        return spdx_document(msgspec.structs.replace(lock, layers={**lock.layers, "services-venvs": layer}))

    first, last = with_wheels({**odd, **wheels}), with_wheels({**wheels, **odd})
    assert first == last
    typing = [p for p in _packages(first).values() if _purl(p).startswith("pkg:pypi/typing-extensions@")]
    assert [p["name"] for p in typing] == ["Typing_Extensions"]


def test_recording_an_archive_in_the_lock_leaves_the_sbom_alone():
    # The SBOM describes what the lock pins; the archives made from those pins are recorded
    # after the build, and must not make the SBOM of the same pins differ.
    lock = _lock()
    t = lock.template
    more = msgspec.structs.replace(t, archives={**t.archives, "tar.zst": LockedArchive(
        file="x.tar.zst", sha256="0" * 64, size=1)})
    assert spdx_document(msgspec.structs.replace(lock, template=more)) == spdx_document(lock)


def test_the_same_deb_in_two_layers_is_one_package_and_a_different_file_is_another():
    lock = _lock()
    curl = lock.layers["base-os"].artifacts["packages"]["curl"]
    twice = _with_artifact(lock, "redis", "packages", "curl", curl)
    assert _packages(spdx_document(twice)) == _packages(spdx_document(lock))

    other = _with_artifact(lock, "redis", "packages", "curl",
                           msgspec.structs.replace(curl, sha256="f" * 64))
    data = spdx_document(other)
    curls = [p for p in _packages(data).values() if p["name"] == "curl"]
    assert sorted(p["checksums"][0]["checksumValue"] for p in curls) == sorted([curl.sha256, "f" * 64])
    assert _validate(data) == []  # distinct, valid SPDXIDs


def test_without_base_files_the_purl_has_no_distro():
    lock = _lock()
    base = lock.layers["base-os"]
    pkgs = {k: v for k, v in base.artifacts["packages"].items() if k != "base-files"}
    layers = {**lock.layers, "base-os": msgspec.structs.replace(
        base, artifacts={**base.artifacts, "packages": pkgs})}
    data = spdx_document(msgspec.structs.replace(lock, layers=layers))
    assert _purl(_by_name(data, "bsdutils")) == "pkg:deb/debian/bsdutils@1%3A2.38.1-5%2Bdeb12u3?arch=amd64"


def test_sbom_filename():
    assert sbom_filename(_lock()) == "debian-12-stock-analysis_1.0.0-1_amd64.spdx.json"
