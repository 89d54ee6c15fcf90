"""apt's lists kept between resolves of the same sources: a second resolve asks the mirror only
whether they changed, and pins the same; a mirror that moved on is followed."""

from __future__ import annotations

import pytest

from lxclayer.lock import toml as locktoml

from .test_pins_e2e import _cli, debian_tar, world  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e


def _pins(p):
    return locktoml.read(p / "locks/tiny.lock").layers["tiny"].artifacts["packages"]


def _indices(srv) -> list[str]:
    return [x for x in srv.paths if "/dists/" in x and not x.endswith("Release")]


def test_a_second_resolve_fetches_only_what_changed_and_pins_the_same(tmp_path, world):  # noqa: F811
    arc, srv, p = world
    store = tmp_path / "s"
    r = _cli(p, store, "lock")
    assert r.returncode == 0, r.stderr
    assert _indices(srv)  # the first resolve fetches the Packages indices
    first = _pins(p)
    assert first["lxtiny"].version == "1.0-1"

    srv.paths.clear()
    r = _cli(p, store, "lock", "--upgrade")
    assert r.returncode == 0, r.stderr
    assert [x for x in srv.paths if "/dists/" in x]  # apt asked whether the suites changed
    assert _indices(srv) == []  # and fetched no index again
    assert _pins(p) == first

    # The mirror moves on: the changed index is fetched and the new version pinned.
    arc.add("debian", "stable", "lxtiny", "1.1-1")
    srv.paths.clear()
    r = _cli(p, store, "lock", "--upgrade")
    assert r.returncode == 0, r.stderr
    assert any("/debian/dists/stable/" in x for x in _indices(srv)), srv.paths
    assert _pins(p)["lxtiny"].version == "1.1-1"

    # Kept lists that no longer match their InRelease are not used: fetched whole again.
    lists = next((store / "snapshots/.apt-lists").glob("*/lists"))
    victim = next(q for q in lists.iterdir() if q.name.endswith("_Packages"))
    victim.write_bytes(victim.read_bytes() + b"\n")
    srv.paths.clear()
    r = _cli(p, store, "lock", "--upgrade")
    assert r.returncode == 0, r.stderr
    assert _indices(srv)
    assert _pins(p)["lxtiny"].version == "1.1-1"
