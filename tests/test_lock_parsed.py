"""The lock's parse kept in the store (lxclayer.lock.parsed): a no-op build skips the TOML
parse, and any change of the lock's bytes is still seen, by a build under --locked too."""

from __future__ import annotations

import os
from pathlib import Path

from lxclayer.lock import parsed
from lxclayer.lock import toml as locktoml
from lxclayer.store import Store

from .conftest import run_cli

LOCK = "locks/test-tpl.lock"


def cli(project: Path, store: Path, *args: str):
    r = run_cli("--project", str(project), "--store", str(store), *args)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def same_size_edit(path: Path, old: str, new: str) -> None:
    """Replace `old` by `new` (same length) and give the file its old mtime back."""
    st = path.stat()
    text = path.read_text()
    assert len(old) == len(new) and old in text
    path.write_text(text.replace(old, new, 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_kept_parse_is_the_lock_and_a_changed_byte_is_parsed_again(project_dir, store_dir):
    assert cli(project_dir, store_dir, "build").returncode == 0
    store, path = Store(store_dir), project_dir / LOCK
    first = parsed.read(path, store)
    assert first == locktoml.read(path)
    assert parsed.cache_file(store, path).is_file()
    assert parsed.read(path, store) == first  # from the kept parse
    sha = first.template.archives["tar.gz"].sha256
    other = ("0" if sha[0] != "0" else "1") + sha[1:]
    same_size_edit(path, sha, other)
    assert parsed.read(path, store).template.archives["tar.gz"].sha256 == other


def test_a_damaged_kept_parse_is_parsed_over(project_dir, store_dir):
    assert cli(project_dir, store_dir, "build").returncode == 0
    store, path = Store(store_dir), project_dir / LOCK
    parsed.read(path, store)
    parsed.cache_file(store, path).write_bytes(b"\x93garbage")
    assert parsed.read(path, store) == locktoml.read(path)


def test_locked_build_sees_a_lock_edit_that_keeps_size_and_mtime(project_dir, store_dir):
    assert cli(project_dir, store_dir, "build").returncode == 0
    assert cli(project_dir, store_dir, "build", "--locked").returncode == 0  # the parse is kept now
    path = project_dir / LOCK
    sha = locktoml.read(path).template.archives["tar.gz"].sha256
    other = ("0" if sha[0] != "0" else "1") + sha[1:]
    same_size_edit(path, sha, other)
    r = cli(project_dir, store_dir, "build", "--locked")
    assert r.returncode != 0
    assert f"differs from the lock's {other}" in r.stderr


def test_a_lock_that_is_no_lock_is_refused_as_before(project_dir, store_dir):
    assert cli(project_dir, store_dir, "build").returncode == 0
    (project_dir / LOCK).write_bytes(b"\xff\xfe not text")
    r = cli(project_dir, store_dir, "build", "--locked")
    assert r.returncode == 2
    assert r.stderr == f"lxclayer: error: {project_dir / LOCK}: not UTF-8 text (byte 0)\n"


def test_stack_digest_follows_a_lock_changed_in_place(project_dir, store_dir):
    """stack_digest is computed once per content: asking again for a lock changed in place
    (the structs are mutable) gives the digest of its new content, as a fresh parse does."""
    import hashlib

    import msgspec

    assert cli(project_dir, store_dir, "build").returncode == 0
    lock = locktoml.read(project_dir / LOCK)
    first = locktoml.stack_digest(lock)
    assert locktoml.stack_digest(lock) == first
    lock.template.version = "9.9"
    changed = locktoml.stack_digest(lock)
    assert changed != first
    bare = msgspec.structs.replace(lock, template=msgspec.structs.replace(lock.template, archives={}, compressor={}),
                                   layers={n: msgspec.structs.replace(la, resolved_at="") for n, la in lock.layers.items()})
    assert changed == "sha256:" + hashlib.sha256(locktoml.dumps(bare).encode()).hexdigest()
