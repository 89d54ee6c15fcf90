"""The repository's two templates: Debian 12 and Debian 13, both in templates/, one layers/.

A shared layer is one definition; where the distributions differ only in a value (the suite,
the PostgreSQL major) the layer takes it from the template's [vars]. Layers that do not read
the tree below have the same input digest and the same stored output in both locks: building
one template after the other builds none of them again.
"""

from pathlib import Path

import pytest

from lxclayer.definitions import load_project
from lxclayer.lock import toml as locktoml

ROOT = Path(__file__).resolve().parent.parent
D12, D13 = "debian-12-stock-analysis", "debian-13-stock-analysis"


@pytest.fixture(scope="module")
def locks():
    a = locktoml.read(ROOT / "locks" / f"{D12}.lock")
    b = locktoml.read(ROOT / "locks" / f"{D13}.lock")
    assert a is not None and b is not None
    return a, b


def test_debian_13_template_takes_trixie_and_postgresql_17_from_its_vars():
    p = load_project(ROOT, template=D13)
    assert p.template.name == D13
    by = {la.name: la for la in p.layers}
    assert by["base-os"].spec.suite == "trixie"
    assert by["postgresql"].spec.packages == ["postgresql-17", "postgresql-client-17"]
    p12 = load_project(ROOT, template=D12)
    by12 = {la.name: la for la in p12.layers}
    assert by12["base-os"].spec.suite == "bookworm"
    assert by12["postgresql"].spec.packages == ["postgresql-15", "postgresql-client-15"]


def test_debian_13_stack_is_debian_12_plus_its_own_two_layers():
    p12, p13 = load_project(ROOT, template=D12), load_project(ROOT, template=D13)
    assert all(la.dir.parent == ROOT / "layers" for la in p13.layers)
    assert {la.name for la in p13.layers} - {la.name for la in p12.layers} == {"base-os-config-13",
                                                                               "rabbitmq4-config"}
    assert {la.name for la in p12.layers} <= {la.name for la in p13.layers}


def test_shared_files_layers_have_one_store_address(locks):
    a, b = locks
    for name in ("postgresql-preseed", "base-os-config", "firstboot", "postgresql-config", "services"):
        assert a.layers[name].input == b.layers[name].input, name
        assert a.layers[name].output == b.layers[name].output, name
    # Same folder, but they name a group that the packages below create with another gid on
    # Debian 13: the gid is part of their input (resolved from the tree below), so not shared.
    for name, group in (("redis-cluster", "group:redis"), ("rabbitmq-config", "group:rabbitmq")):
        assert a.layers[name].resolved[group] != b.layers[name].resolved[group], name
        assert a.layers[name].input != b.layers[name].input, name
    # identities-scrub reads the tree below (another input) but removes the same paths.
    assert a.layers["identities-scrub"].input != b.layers["identities-scrub"].input
    assert a.layers["identities-scrub"].output == b.layers["identities-scrub"].output
    for name in ("base-os", "postgresql", "rabbitmq", "python-runtime", "services-venvs"):
        assert a.layers[name].input != b.layers[name].input, name


def test_debian_13_lock_pins_what_issue_12_asks(locks):
    _, b = locks
    pkgs = {}
    for layer in b.layers.values():
        pkgs.update(layer.artifacts.get("packages", {}))
    assert pkgs["base-files"].version.startswith("13.")
    assert pkgs["postgresql-17"].version.startswith("17.")
    assert pkgs["redis-server"].version.split(":")[-1].startswith("8.0.")
    assert pkgs["rabbitmq-server"].version.startswith("4.0.5")
    assert pkgs["python3.13"].version.startswith("3.13.")
