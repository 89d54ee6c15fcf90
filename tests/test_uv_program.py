"""The uv program a uv layer mounts: taken out of its pinned wheel once, then kept in the store."""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile

import pytest

from lxclayer.builders import uv
from lxclayer.errors import BuildError
from lxclayer.lock.model import Artifact

from .test_builders_debian import _ctx

PROGRAM = b"#!/bin/sh\necho 'uv 0.9.0'\n" + bytes(range(256)) * 64


def _pinned_wheel(tmp_path, store) -> Artifact:
    whl = tmp_path / "uv-0.9.0-py3-none-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("uv-0.9.0.data/scripts/uv", PROGRAM)
        z.writestr("uv-0.9.0.dist-info/METADATA", "Name: uv\nVersion: 0.9.0\n")
    sha = hashlib.sha256(whl.read_bytes()).hexdigest()
    size = whl.stat().st_size
    store.put_artifact_file(whl, sha, name="uv wheel")
    return Artifact(name="uv", version="0.9.0", arch="py3-none-manylinux_2_17_x86_64", sha256=sha,
                    source="http://127.0.0.1:9/uv-0.9.0-py3-none-manylinux_2_17_x86_64.whl", size=size)


def _layer_ctx(tmp_path, n: int):
    ctx = _ctx(tmp_path, offline=True)
    ctx.workdir = tmp_path / f"work-{n}"  # each layer has a workdir of its own
    ctx.workdir.mkdir()
    return ctx


def _program_of(ctx, pin) -> bytes:
    prog = uv._uv_program(ctx, pin)
    assert stat.S_IMODE(os.stat(prog).st_mode) == 0o755
    return prog.read_bytes()


def test_the_uv_program_is_taken_out_of_the_wheel_once_and_then_comes_from_the_store(tmp_path):
    first = _layer_ctx(tmp_path, 1)
    pin = _pinned_wheel(tmp_path, first.store)
    assert _program_of(first, pin) == PROGRAM
    # The wheel leaves the store (gc of an old lock): a later layer still has the same program,
    # offline, without it.
    wheel = first.store.artifact_path(pin.sha256)
    data = wheel.read_bytes()
    wheel.unlink()
    assert _program_of(_layer_ctx(tmp_path, 2), pin) == PROGRAM
    # The kept program damaged: not used; with the wheel back, taken out of it again.
    kept = first.store.artifact_path(hashlib.sha256(PROGRAM).hexdigest())
    kept.write_bytes(b"#!/bin/sh\necho evil\n")
    with pytest.raises(BuildError, match=r"uv 0\.9\.0 .* is not in the store and --offline is set"):
        uv._uv_program(_layer_ctx(tmp_path, 3), pin)
    wheel.write_bytes(data)
    assert _program_of(_layer_ctx(tmp_path, 4), pin) == PROGRAM
    assert kept.read_bytes() == PROGRAM  # kept again
