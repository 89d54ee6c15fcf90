"""SLSA provenance v1 for every build: an in-toto Statement v1, `dist/<template>.intoto.json`.

Made from the lock (with its archives) and the project's git state, nothing else: the same lock
and the same commit give the same bytes (keys sorted, times from SOURCE_DATE_EPOCH, lists
sorted). See docs/signing.md for every field.

- subjects: every archive file the lock records (tar.gz, tar.zst, the OCI `.tar`) by its
  sha256, and the OCI image by its manifest digest (named `<template>:<version>-<release>`,
  the tag `push` defaults to);
- buildDefinition: our buildType, the template and its formats (externalParameters), the lock's
  stack digest, the definition digest, SOURCE_DATE_EPOCH and, when the project is a git
  checkout, its commit and whether the tree differed from it (internalParameters), and every
  file the lock pins (.debs, wheels, tools) as resolvedDependencies (uri, sha256, name);
- runDetails: the builder id and lxclayer's version; startedOn = finishedOn = SOURCE_DATE_EPOCH
  (the build is a function of its inputs; the wall clock is not one).

Signed, it is a DSSE envelope (:mod:`lxclayer.trust.dsse`): `push --sign-key` attaches that.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import msgspec

from .. import __version__
from ..fsio import write_if_changed
from ..lock.model import Lockfile
from ..lock.toml import stack_digest
from .sbom import created_at, deb_purl, debian_release, locked_artifacts, pool_url, pypi_purl

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://lxclayer.dev/buildtypes/template/v1"
BUILDER_ID = "https://lxclayer.dev/builder/v1"


class ResourceDescriptor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: str = ""
    uri: str = ""
    digest: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Subject(msgspec.Struct, frozen=True):
    name: str
    digest: dict[str, str]


class GitSource(msgspec.Struct, frozen=True, omit_defaults=True):
    commit: str
    dirty: bool


def git_source(root: Path, exclude: list[Path] = ()) -> GitSource | None:
    """The commit of the git checkout holding `root`, and whether the files under `root` (but
    `exclude`, e.g. the output folder) differ from it; None when `root` is not in a git checkout
    or git is missing. git runs only when a `.git` is found above `root`."""
    root = root.resolve()
    if not any((p / ".git").exists() for p in (root, *root.parents)):
        return None
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # status must not write the index
    spec = ["."] + [f":(exclude){os.path.relpath(p.resolve(), root)}" for p in exclude
                    if p.resolve().is_relative_to(root) and p.resolve() != root]
    try:  # one git run (a no-op build pays for it): the commit in the header, changes after it
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain=v2", "--branch",
                                 "--no-ahead-behind", "--", *spec],
                                capture_output=True, text=True, env=env, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if status.returncode != 0:
        return None
    lines = status.stdout.splitlines()
    commit = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), "")
    if len(commit) < 40 or not all(c in "0123456789abcdef" for c in commit):  # "(initial)": no commit yet
        return None
    return GitSource(commit=commit, dirty=any(not ln.startswith("#") for ln in lines))


def provenance_filename(lock: Lockfile) -> str:
    t = lock.template
    return f"{t.name}_{t.version}-{t.release}_{t.arch}.intoto.json"


def image_name(lock: Lockfile) -> str:
    t = lock.template
    return f"{t.name}:{t.version}-{t.release}"


def subjects(lock: Lockfile) -> list[Subject]:
    out = []
    for fmt, a in lock.template.archives.items():
        out.append(Subject(a.file, {"sha256": a.sha256}))
        if fmt == "oci" and a.image:
            out.append(Subject(image_name(lock), {"sha256": a.image.removeprefix("sha256:")}))
    return sorted(out, key=lambda s: (s.name, s.digest["sha256"]))


def resolved_dependencies(lock: Lockfile) -> list[ResourceDescriptor]:
    """Every file the lock pins, once: .debs (uri: the Debian archive pool URL) and wheels and
    tools (uri: where they were downloaded), each with its sha256."""
    distro = debian_release(lock)
    found: dict[tuple[str, str], ResourceDescriptor] = {}
    for a in locked_artifacts(lock, "packages"):
        d = ResourceDescriptor(name=a.name, uri=pool_url(a.source), digest={"sha256": a.sha256},
                               annotations={"version": a.version,
                                            "purl": deb_purl(a.name, a.version, a.arch, distro)})
        found.setdefault((d.uri, a.sha256), d)
    for kind in ("wheels", "tools"):
        for a in locked_artifacts(lock, kind):
            d = ResourceDescriptor(name=a.name, uri=a.source, digest={"sha256": a.sha256},
                                   annotations={"version": a.version, "purl": pypi_purl(a.name, a.version)})
            found.setdefault((d.uri, a.sha256), d)
    for layer in lock.layers.values():  # any other kind (tarballs): by its URL or path
        for kind, arts in layer.artifacts.items():
            if kind in ("packages", "wheels", "tools"):
                continue
            for a in arts.values():
                d = ResourceDescriptor(name=a.name, uri=a.source, digest={"sha256": a.sha256},
                                       annotations={"version": a.version} if a.version else {})
                found.setdefault((d.uri, a.sha256), d)
    return [found[k] for k in sorted(found)]


def statement(lock: Lockfile, source: GitSource | None) -> dict:
    t = lock.template
    internal = {"lock": stack_digest(lock), "definition": t.definition,
                "sourceDateEpoch": t.source_date_epoch}
    if source is not None:
        internal["source"] = msgspec.to_builtins(source)
    when = created_at(t.source_date_epoch)
    return {
        "_type": STATEMENT_TYPE,
        "subject": msgspec.to_builtins(subjects(lock)),
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "template": t.name, "version": t.version, "release": t.release, "arch": t.arch,
                    "formats": sorted(t.archives),
                },
                "internalParameters": internal,
                "resolvedDependencies": msgspec.to_builtins(resolved_dependencies(lock)),
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"lxclayer": __version__}},
                "metadata": {"startedOn": when, "finishedOn": when},
            },
        },
    }


def provenance_document(lock: Lockfile, source: GitSource | None) -> bytes:
    """The statement as canonical JSON (keys sorted, two-space indent, one final newline)."""
    raw = msgspec.json.encode(statement(lock, source), order="sorted")
    return msgspec.json.format(raw, indent=2) + b"\n"


def write_provenance(lock: Lockfile, out_dir: Path, source: GitSource | None) -> Path:
    """`<out_dir>/<template>.intoto.json`; rewritten only when it differs."""
    path = out_dir / provenance_filename(lock)
    write_if_changed(path, provenance_document(lock, source))
    return path


__all__ = ["BUILD_TYPE", "BUILDER_ID", "PREDICATE_TYPE", "GitSource", "git_source", "provenance_document",
           "provenance_filename", "write_provenance"]
