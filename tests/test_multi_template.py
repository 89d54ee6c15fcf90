"""Several templates in one project (issue 12): templates/*.toml sharing layers/, the default
template, --template NAME and --all, [vars] filling shared layers, sharing of store entries."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from lxclayer.lock import toml as locktoml

from .conftest import run_cli, write_project


def two_templates(root: Path) -> Path:
    """The test project, turned into two templates `old` and `new` sharing `base` and `config`;
    `extra` takes the distribution's name from the template's [vars]."""
    write_project(root)
    (root / "layers" / "template.toml").unlink()
    (root / "layers" / "extra" / "layer.toml").write_text(textwrap.dedent("""\
        kind = "files"
        description = "for {{codename}}"
        delete = ["etc/obsolete.conf"]

        [symlinks]
        "etc/codename-{{codename}}" = "/usr/share/{{codename}}"
        """))
    (root / "templates").mkdir()
    for name, codename in (("old", "bookworm"), ("new", "trixie")):
        (root / "templates" / f"{name}.toml").write_text(textwrap.dedent(f"""\
            name = "{name}"
            version = "1.0"
            formats = ["tar.gz"]
            source_date_epoch = 1700000000
            layers = ["base", "config", "extra"]

            [vars]
            codename = "{codename}"
            """))
    (root / "lxclayer.toml").write_text('[project]\ndefault-template = "new"\n')
    return root


def _cli(root: Path, store: Path, *args: str):
    return run_cli("--project", str(root), "--store", str(store), *args)


def _states(r) -> dict[str, str]:
    return {x["name"]: x["state"] for x in json.loads(r.stdout)["layers"]}


def test_default_template_then_the_other_shares_every_layer_that_does_not_differ(tmp_path):
    root = two_templates(tmp_path / "p")
    # both locks are committed, as in the repository; this machine's store is empty
    assert _cli(root, tmp_path / "elsewhere", "build", "--all").returncode == 0
    store = tmp_path / "s"
    r = _cli(root, store, "build", "--json")
    assert r.returncode == 0, r.stderr
    assert _states(r) == {"base": "built", "config": "built", "extra": "built"}
    assert (root / "dist" / "new_1.0-1_amd64.tar.gz").exists()

    # plan for the other template: the shared layers are cached
    r = _cli(root, store, "plan", "--template", "old", "--json")
    assert r.returncode == 0, r.stderr
    planned = {x["name"]: x["state"] for x in json.loads(r.stdout)}
    assert planned == {"base": "cached", "config": "cached", "extra": "build"}
    r = _cli(root, store, "build", "--template", "old", "--json")
    assert r.returncode == 0, r.stderr
    assert _states(r) == {"base": "cached", "config": "cached", "extra": "built"}

    new, old = (locktoml.read(root / "locks" / f"{n}.lock") for n in ("new", "old"))
    for layer in ("base", "config"):
        assert new.layers[layer].input == old.layers[layer].input
        assert new.layers[layer].output == old.layers[layer].output
    assert new.layers["extra"].settings != old.layers["extra"].settings
    assert new.layers["extra"].input != old.layers["extra"].input

    # the var's value is in what the layer ships
    import tarfile
    with tarfile.open(root / "dist" / "old_1.0-1_amd64.tar.gz") as tf:
        assert tf.getmember("./etc/codename-bookworm").linkname == "/usr/share/bookworm"

    # --all: both, nothing to do; gc keeps what either lock needs
    r = _cli(root, store, "build", "--all", "--locked")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("== ") == 2 and "built" not in r.stderr
    r = _cli(root, store, "gc")
    assert r.returncode == 0, r.stderr
    for name in ("new", "old"):
        r = _cli(root, store, "build", "--template", name, "--locked", "--offline", "--json")
        assert r.returncode == 0 and set(_states(r).values()) == {"cached"}, r.stderr


def test_lock_diff_between_two_templates_names_what_they_share(tmp_path):
    root = two_templates(tmp_path / "p")
    store = tmp_path / "s"
    assert _cli(root, store, "build", "--all").returncode == 0
    r = _cli(root, store, "lock", "diff", str(root / "locks" / "old.lock"), str(root / "locks" / "new.lock"))
    assert r.returncode in (0, 1), r.stderr
    assert "template: name old → new" in r.stdout
    assert "shared: base, config (same output)" in r.stdout
    assert "extra: settings" in r.stdout


@pytest.mark.parametrize("change,words", [
    (lambda root: (root / "templates" / "new.toml").write_text(
        (root / "templates" / "new.toml").read_text().replace("[vars]\ncodename = \"trixie\"\n", "")),
     "layers/extra/layer.toml: key description: uses {{codename}}, which template 'new' does not set in [vars]"),
    (lambda root: (root / "templates" / "copy.toml").write_text((root / "templates" / "new.toml").read_text()),
     "templates/new.toml: key name: template 'new' is also defined in templates/copy.toml"),
    (lambda root: (root / "lxclayer.toml").write_text('[project]\ndefault-template = "sid"\n'),
     "lxclayer.toml: key project.default-template: no template named 'sid' (the project has: new, old)"),
    (lambda root: (root / "lxclayer.toml").unlink(),
     "the project has several templates (new, old): name the default in [project] default-template"),
    (lambda root: (root / "lxclayer.toml").write_text('[project]\ndefault = "new"\n'),
     "lxclayer.toml: key project.default: unknown key"),
])
def test_bad_template_selection_is_refused_with_file_and_key(tmp_path, change, words):
    root = two_templates(tmp_path / "p")
    change(root)
    r = _cli(root, tmp_path / "s", "build")
    assert r.returncode == 2, r.stdout + r.stderr
    assert words in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (root / "locks").exists() or not any((root / "locks").iterdir())


def test_an_unknown_template_name_on_the_command_line(tmp_path):
    root = two_templates(tmp_path / "p")
    r = _cli(root, tmp_path / "s", "build", "--template", "sid")
    assert r.returncode == 2
    assert "no template named 'sid' (the project has: new, old)" in r.stderr
