"""What the commands outside `build` show (docs/progress.md): `boot-test` and `verify --repair`
take `--progress` as `build` does, and every size a command prints is in the decimal units of
the progress view (`59.2 MB`, `4.1 kB`)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from lxclayer.cli import main
from lxclayer.lock import toml as locktoml
from lxclayer.store import Store

from .conftest import run_cli

ARCHIVE = "test-tpl_1.0-1_amd64.tar.gz"


def cli(project: Path, store: Path, *args: str):
    r = run_cli("--project", str(project), "--store", str(store), *args)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def decimal(n: int) -> str:
    """The size as the docs write it, worked out here, not by lxclayer's formatter."""
    if n < 1000:
        return f"{n} B"
    if n < 1000 ** 2:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1000 ** 2:.1f} MB"


def test_build_prints_the_archive_size_in_decimal_units(project_dir, store_dir):
    # incompressible: the archive is some kB, where kB and KiB differ
    (project_dir / "layers" / "config" / "root" / "etc" / "noise").write_bytes(os.urandom(20000))
    r = cli(project_dir, store_dir, "build", "--progress", "plain")
    assert r.returncode == 0, r.stderr
    archive = project_dir / "dist" / ARCHIVE
    sha = locktoml.read(project_dir / "locks" / "test-tpl.lock").template.archives["tar.gz"].sha256
    assert r.stdout.splitlines()[0] == f"{archive}  {decimal(archive.stat().st_size)}  sha256 {sha}"
    assert r.stdout.splitlines()[0].split("  ")[1].endswith(" kB")
    assert "KiB" not in r.stdout and "MiB" not in r.stdout


def test_gc_prints_sizes_in_decimal_units(project_dir, store_dir):
    assert cli(project_dir, store_dir, "build").returncode == 0
    (project_dir / "layers" / "config" / "root" / "etc" / "motd").write_text("x" * 1500 + "\n")
    assert cli(project_dir, store_dir, "build").returncode == 0  # the first config entry is garbage now
    r = cli(project_dir, store_dir, "gc", "--dry-run")
    assert r.returncode == 0, r.stderr
    freed = [ln for ln in r.stdout.splitlines() if ln.startswith("would free layer entry ")]
    assert len(freed) == 1 and "(config, files, " in freed[0]
    assert re.search(r"\(config, files, (\d+ B|\d+\.\d kB)\): no live root", freed[0]), freed[0]
    summary = next(ln for ln in r.stdout.splitlines() if re.match("would free [0-9]", ln))
    assert re.match(r"would free (\d+ B|\d+\.\d kB): 1 layer entries", summary), summary
    assert "KiB" not in r.stdout and "MiB" not in r.stdout


def damage_a_blob(store: Path, project: Path, layer: str) -> None:
    lock = locktoml.read(project / "locks" / "test-tpl.lock")
    entry = Store(store).lookup(lock.layers[layer].input)
    h = next(e.hash for e in entry.entries if e.type == "file" and e.size)
    path = Store(store).blob_path(h)
    os.chmod(path, 0o644)
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 0x01]) + data[1:])


def test_verify_repair_shows_its_rebuild_as_json_events(project_dir, store_dir):
    assert cli(project_dir, store_dir, "build").returncode == 0
    damage_a_blob(store_dir, project_dir, "config")
    r = cli(project_dir, store_dir, "verify", "--repair", "--progress", "json")
    assert r.returncode == 0, r.stderr
    assert "repaired config: built again" in r.stdout
    events = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
    assert [ln for ln in r.stderr.splitlines() if not ln.startswith("{")] == []  # nothing but events
    started = [e for e in events if e["event"] == "layer-started"]
    assert [e["layer"] for e in started] == ["config"]
    finished = {e["layer"]: e["state"] for e in events if e["event"] == "layer-finished"}
    assert finished["config"] == "built"


def test_verify_repair_plain_says_what_it_builds(project_dir, store_dir):
    assert cli(project_dir, store_dir, "build").returncode == 0
    damage_a_blob(store_dir, project_dir, "config")
    r = cli(project_dir, store_dir, "verify", "--repair", "--progress", "plain")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert [ln.split()[0] for ln in lines] == ["cached", "building", "built", "cached"]
    assert lines[1] == "  building config [files] (not in the store)"
    assert lines[2].startswith("  built    config in ")
    assert "\x1b" not in r.stderr


class FakeReport:
    def __init__(self, ok: bool):
        self.ok = ok

    def to_json(self) -> bytes:
        return json.dumps({"ok": self.ok}).encode()

    def to_table(self) -> str:
        return "PASS" if self.ok else "FAIL (1 of 1 failed)"


@pytest.fixture
def fake_boot(monkeypatch):
    """boot-test's engine replaced by one that says two steps (booting needs root and lxc; the
    command's own part is what is tested here)."""
    import lxclayer.boottest.run as run

    outcome = {"ok": True}

    def boot_test(archive, checks, faults, *, timeout, reboot, network, progress):
        progress(f"unpacking {Path(archive).name}")
        progress("starting the container")
        return FakeReport(outcome["ok"])

    monkeypatch.setattr(run, "boot_test", boot_test)
    return outcome


def boot(project: Path, store: Path, capsys, *args: str) -> tuple[int, str, str]:
    archive = project / "some.tar.gz"
    archive.write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        main(["--project", str(project), "--store", str(store), "boot-test", str(archive), *args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_boot_test_progress_json_gives_its_steps_as_events(project_dir, store_dir, capsys, fake_boot):
    code, out, err = boot(project_dir, store_dir, capsys, "--progress", "json")
    assert code == 0
    assert out == "PASS\n"
    events = [json.loads(ln) for ln in err.splitlines()]
    assert [(e["event"], e["message"]) for e in events] == [
        ("step", "unpacking some.tar.gz"), ("step", "starting the container")]
    assert all(isinstance(e["time"], float) for e in events)


def test_boot_test_progress_plain_and_exit_code_of_a_failed_check(project_dir, store_dir, capsys, fake_boot):
    fake_boot["ok"] = False
    code, out, err = boot(project_dir, store_dir, capsys, "--progress", "plain")
    assert code == 1
    assert out == "FAIL (1 of 1 failed)\n"
    assert err.splitlines() == ["  unpacking some.tar.gz", "  starting the container"]


def test_boot_test_json_report_keeps_stderr_quiet(project_dir, store_dir, capsys, fake_boot):
    code, out, err = boot(project_dir, store_dir, capsys, "--json")
    assert code == 0
    assert json.loads(out) == {"ok": True}
    assert err == ""


def test_boot_test_refuses_an_unknown_progress_mode(project_dir, store_dir, capsys, fake_boot):
    code, _, err = boot(project_dir, store_dir, capsys, "--progress", "fancy")
    assert code == 2
    assert "Invalid value for '--progress'" in err
