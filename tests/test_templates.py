"""Two templates from one project: Debian 12 (layers/) and Debian 13 (layers-debian-13/).

Layers that do not read the tree below (files layers) are the same folders, so they have
the same input digest and the same stored output in both locks: building one template
after the other builds none of them again.
"""

from pathlib import Path

import pytest

from lxclayer.definitions import load_project
from lxclayer.lock import toml as locktoml

ROOT = Path(__file__).resolve().parent.parent
D12 = ROOT / "layers" / "template.toml"
D13 = ROOT / "layers-debian-13" / "template.toml"


@pytest.fixture(scope="module")
def locks():
    a = locktoml.read(ROOT / "locks" / "debian-12-stock-analysis.lock")
    b = locktoml.read(ROOT / "locks" / "debian-13-stock-analysis.lock")
    assert a is not None and b is not None
    return a, b


def test_debian_13_template_loads_with_trixie_and_postgresql_17():
    p = load_project(template_file=D13)
    assert p.template.name == "debian-13-stock-analysis"
    by = {la.name: la for la in p.layers}
    assert by["base-os"].spec.suite == "trixie"
    assert by["postgresql"].spec.packages == ["postgresql-17", "postgresql-client-17"]
    assert (by["postgresql-config"].dir / "root/usr/lib/systemd/system/postgresql@17-main.service.d").is_dir()


def test_files_layers_are_shared_folders_not_copies():
    p12, p13 = load_project(template_file=D12), load_project(template_file=D13)
    d12 = {la.name: la.dir.resolve() for la in p12.layers}
    shared = {la.name for la in p13.layers if d12.get(la.name) == la.dir.resolve()}
    assert {"base-os-config", "firstboot", "redis-cluster", "rabbitmq-config", "services",
            "postgresql-preseed"} <= shared
    # Only what must differ is its own folder.
    assert {la.name for la in p13.layers} - shared == {"base-os", "postgresql", "postgresql-config",
                                                      "rabbitmq4-config", "base-os-config-13"}


def test_shared_files_layers_have_one_store_address(locks):
    a, b = locks
    for name in ("postgresql-preseed", "base-os-config", "firstboot", "services"):
        assert a.layers[name].input == b.layers[name].input, name
        assert a.layers[name].output == b.layers[name].output, name
    # Same folder, but they name a group that the packages below create with another gid on
    # Debian 13: the gid is part of their input (resolved from the tree below), so not shared.
    for name, group in (("redis-cluster", "group:redis"), ("rabbitmq-config", "group:rabbitmq")):
        assert a.layers[name].resolved[group] != b.layers[name].resolved[group], name
        assert a.layers[name].input != b.layers[name].input, name
    for name in ("base-os", "postgresql", "rabbitmq", "python-runtime", "services-venvs", "postgresql-config"):
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
