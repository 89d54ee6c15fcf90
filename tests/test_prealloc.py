"""Files written with their blocks reserved: exactly the bytes written, whether or not the file
system can reserve."""

from __future__ import annotations

import errno
import os
import random

import pytest

from lxclayer import prealloc


def _pieces():
    rnd = random.Random(7)
    return [rnd.randbytes(rnd.randrange(0, 5000)) for _ in range(60)]


@pytest.mark.parametrize("can_reserve", [True, False])
def test_a_growing_file_holds_exactly_what_was_written(tmp_path, monkeypatch, can_reserve):
    monkeypatch.setattr(prealloc, "STEP", 4096)  # many reservations for a small file
    if not can_reserve:
        def refuse(fd, offset, length):
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        monkeypatch.setattr(os, "posix_fallocate", refuse)
    pieces = _pieces()
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    f = prealloc.GrowingFile(fd)
    for p in pieces:
        f.write(p)
    f.finish()
    os.close(fd)
    assert path.read_bytes() == b"".join(pieces)
    assert f.size == path.stat().st_size


def test_write_new_refuses_to_overwrite(tmp_path):
    path = tmp_path / "chunk"
    prealloc.write_new(path, b"head", b"body")
    assert path.read_bytes() == b"headbody"
    with pytest.raises(FileExistsError):
        prealloc.write_new(path, b"other")
    assert path.read_bytes() == b"headbody"
