"""Sound keys for files layers: the input digest covers exactly what the layer ships.

Property: an equal input digest gives an equal output digest (built into two stores, from two
folders whose unrecorded details differ: host modes, mtimes), and any change of a shipped thing
(a file's bytes or executable bit, an empty folder, a symlink's target, an entry added or
removed) changes the input digest.
"""

from __future__ import annotations

import errno
import os
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lxclayer import scan
from lxclayer.build import build, plan
from lxclayer.definitions import load_project
from lxclayer.errors import BuildError
from lxclayer.store import Store

NAMES = st.sampled_from(["a", "b", "c", "etc", "var"])
FILE = st.tuples(st.just("file"), st.binary(max_size=8), st.booleans())
LINK = st.tuples(st.just("link"), st.sampled_from(["x", "y/z", "../w"]))  # names never written: no loops
TREE = st.recursive(
    st.one_of(FILE, LINK),
    lambda children: st.dictionaries(NAMES, children, max_size=3),
    max_leaves=8,
)
ROOT = st.dictionaries(NAMES, TREE, max_size=4)


def write_tree(folder: Path, tree: dict, *, variant: bool) -> None:
    """Write `tree`; `variant` changes what a checkout may change and a layer must not read."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, node in tree.items():
        p = folder / name
        if isinstance(node, dict):
            write_tree(p, node, variant=variant)
            os.chmod(p, 0o700 if variant else 0o755)
        elif node[0] == "file":
            p.write_bytes(node[1])
            mode = (0o700 if variant else 0o755) if node[2] else (0o600 if variant else 0o664)
            os.chmod(p, mode)
            os.utime(p, (1, 1) if variant else (2_000_000_000, 2_000_000_000))
        else:
            os.symlink(node[1], p)


def project(base: Path, tree: dict, *, variant: bool = False) -> Path:
    layers = base / "layers"
    (layers / "tree").mkdir(parents=True)
    (layers / "template.toml").write_text(textwrap.dedent("""\
        name = "tree"
        version = "1"
        release = 1
        arch = "amd64"
        formats = ["tar.gz"]
        source_date_epoch = 1700000000
        layers = ["tree"]
        """))
    (layers / "tree" / "layer.toml").write_text('kind = "files"\n')
    write_tree(layers / "tree" / "root", tree, variant=variant)
    (base / "locks").mkdir()
    return base


def digests(proj: Path, store: Path) -> tuple[str, str]:
    p = load_project(proj)
    planned = plan(p, Store(store), None)[0]
    res = build(p, Store(store), write_lock=False)
    assert res.layers[0].input == planned.input
    return planned.input, res.layers[0].output  # type: ignore[return-value]


def mutations(tree: dict, prefix: str = ""):
    """(description, mutated tree) for one change of a shipped thing at each place."""
    yield f"{prefix}new empty folder", {**tree, "zz": {}}
    yield f"{prefix}new file", {**tree, "zf": ("file", b"", False)}
    for name, node in tree.items():
        yield f"{prefix}{name} removed", {k: v for k, v in tree.items() if k != name}
        if isinstance(node, dict):
            for what, sub in mutations(node, f"{prefix}{name}/"):
                yield what, {**tree, name: sub}
        elif node[0] == "file":
            yield f"{prefix}{name} bytes", {**tree, name: ("file", node[1] + b"!", node[2])}
            yield f"{prefix}{name} exec bit", {**tree, name: ("file", node[1], not node[2])}
        else:
            yield f"{prefix}{name} target", {**tree, name: ("link", node[1] + "x")}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ROOT)
def test_equal_input_digest_means_equal_output_and_shipped_changes_change_it(tree):
    with tempfile.TemporaryDirectory(prefix="lxclayer-prop-") as tmp:
        t = Path(tmp)
        a = digests(project(t / "a", tree), t / "store-a")
        b = digests(project(t / "b", tree, variant=True), t / "store-b")
        assert a == b  # same input digest, and the same output from another folder and store
        seen = {a[0]: a[1]}
        for i, (what, changed) in enumerate(mutations(tree)):
            if i >= 6:
                break
            d = digests(project(t / f"m{i}", changed), t / "store-a")
            assert d[0] != a[0], what
            # and the input digest alone decides the output (one store for all of them)
            assert seen.setdefault(d[0], d[1]) == d[1], what


def test_an_empty_folder_changes_the_input_and_is_shipped(tmp_path):
    """Issue 10 item 1: adding root/var/empty-dir kept the old output in a warm store."""
    proj = project(tmp_path / "p", {"etc": {"motd": ("file", b"hi\n", False)}})
    before = digests(proj, tmp_path / "store")
    (proj / "layers/tree/root/var/empty-dir").mkdir(parents=True)
    after = digests(proj, tmp_path / "store")
    assert before[0] != after[0]
    assert before[1] != after[1]
    import tarfile

    with tarfile.open(proj / "dist" / "tree_1-1_amd64.tar.gz") as tf:
        assert tf.getmember("./var/empty-dir").isdir()


def test_root_written_with_dot_slash_ships_its_files(tmp_path):
    """Issue 15: `root = "./root"` was accepted and the archive then lacked the files."""
    import tarfile

    proj = project(tmp_path / "p", {"etc": {"motd": ("file", b"hi\n", False)}})
    (proj / "layers/tree/layer.toml").write_text('kind = "files"\nroot = "./root"\n')
    build(load_project(proj), Store(tmp_path / "store"), write_lock=False)
    with tarfile.open(proj / "dist" / "tree_1-1_amd64.tar.gz") as tf:
        assert tf.extractfile("./etc/motd").read() == b"hi\n"  # type: ignore[union-attr]


def test_scanning_raises_on_an_xattr_error_that_could_drop_a_capability(monkeypatch, tmp_path):
    f = tmp_path / "ping"
    f.write_bytes(b"x")

    def failing(path, follow_symlinks=False):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(scan.os, "listxattr", failing)
    with pytest.raises(BuildError, match="Input/output error"):
        scan.read_xattrs(str(f))

    def unsupported(path, follow_symlinks=False):
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(scan.os, "listxattr", unsupported)
    assert scan.read_xattrs(str(f)) == {}


def test_plan_names_an_added_empty_folder(tmp_path):
    from lxclayer.lock import toml as locktoml

    proj = project(tmp_path / "p", {"etc": {"motd": ("file", b"hi\n", False)}})
    build(load_project(proj), Store(tmp_path / "store"))
    (proj / "layers/tree/root/var/empty-dir").mkdir(parents=True)
    p = load_project(proj)
    planned = plan(p, Store(tmp_path / "store"), locktoml.read(p.lock_file))[0]
    assert planned.state == "build"
    assert planned.reasons == ["folder root/var/empty-dir added"]
