"""What a build shows (issue 24, docs/progress.md): `--progress plain` line by line, `json` one
event per line, `tty` under a pseudo-terminal; program command lines and output only in the
build's log unless `-v`; after a failing program, its last lines and the log's path."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from lxclayer.progress import Console, log_path
from lxclayer.progress import events as ev
from lxclayer.store import Store

from .conftest import run_cli
from .e2e_support import require_root, require_tools

HASH12 = r"[0-9a-f]{12}"
SECS = r"\d+\.\d"


def match_lines(text: str, patterns: list[str]) -> None:
    lines = text.splitlines()
    assert len(lines) == len(patterns), text
    for line, pat in zip(lines, patterns, strict=True):
        assert re.fullmatch(pat, line), f"{line!r} does not match {pat!r}\n{text}"


def test_plain_output_of_a_cold_and_a_no_op_build(project_dir, store_dir):
    env = {"LXCLAYER_STORE": str(store_dir)}
    r = run_cli("build", "--progress", "plain", cwd=project_dir, env=env)
    assert r.returncode == 0, r.stderr
    match_lines(r.stderr, [
        r"    base: resolving pins",
        r"  building base \[import\] \(new layer \(not in the lock\)\)",
        r"    base: reading base\.tar",
        rf"  built    base in {SECS}s  {HASH12}",
        r"  building config \[files\] \(new layer \(not in the lock\)\)",
        rf"  built    config in {SECS}s  {HASH12}",
        r"  building extra \[files\] \(new layer \(not in the lock\)\)",
        rf"  built    extra in {SECS}s  {HASH12}",
        r"  composing test-tpl_1\.0-1_amd64\.tar\.gz",
        rf"  composed test-tpl_1\.0-1_amd64\.tar\.gz in {SECS}s \(0 of 1 chunks reused\)",
        rf"done in {SECS}s",
    ])
    assert "\x1b" not in r.stderr and "\r" not in r.stderr
    logs = sorted((store_dir / "logs").glob("*-test-tpl.log"))
    assert len(logs) == 1
    logged = logs[0].read_text()
    assert re.search(rf"^\d\d:\d\d:\d\d built    extra in {SECS}s  {HASH12}$", logged, re.M), logged

    again = run_cli("build", "--progress", "plain", cwd=project_dir, env=env)
    assert again.returncode == 0, again.stderr
    match_lines(again.stderr, [
        rf"  cached   base  {HASH12}",
        rf"  cached   config  {HASH12}",
        rf"  cached   extra  {HASH12}",
        r"  up to date test-tpl_1\.0-1_amd64\.tar\.gz",
        rf"done in {SECS}s",
    ])
    # a no-op build leaves no log behind
    assert sorted((store_dir / "logs").glob("*.log")) == logs


def test_json_progress_is_one_event_per_line(project_dir, store_dir):
    env = {"LXCLAYER_STORE": str(store_dir)}
    r = run_cli("build", "--progress", "json", "--format", "tar.gz", "--format", "oci", cwd=project_dir, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[-1].startswith("done in ")
    events = [json.loads(ln) for ln in lines[:-1]]
    assert all(isinstance(e["time"], float) for e in events)
    layers = [(e["event"], e.get("layer")) for e in events if e["event"].startswith("layer-")]
    assert layers == [
        ("layer-step", "base"), ("layer-started", "base"), ("layer-step", "base"), ("layer-finished", "base"),
        ("layer-started", "config"), ("layer-finished", "config"),
        ("layer-started", "extra"), ("layer-finished", "extra"),
    ]
    done = [e for e in events if e["event"] == "layer-finished"]
    assert [(e["state"], e["kind"], len(e["output"])) for e in done] == [
        ("built", "import", 32), ("built", "files", 32), ("built", "files", 32)]
    assert events[1]["reasons"] == ["new layer (not in the lock)"]
    exports = {e["format"]: e for e in events if e["event"] == "export-finished"}
    lock = (project_dir / "locks" / "test-tpl.lock").read_text()
    assert set(exports) == {"tar.gz", "oci"}
    for fmt, e in exports.items():
        assert e["composed"] is True and e["sha256"] in lock, fmt
        started = [i for i, x in enumerate(events) if x["event"] == "export-started" and x["format"] == fmt]
        progress = [x for x in events if x["event"] == "export-progress" and x["format"] == fmt]
        assert len(started) == 1 and progress, fmt
        assert progress[-1]["bytes_done"] == progress[-1]["bytes_total"] > 0
    assert "program-started" not in {e["event"] for e in events}  # no program layer here

    again = run_cli("build", "--progress", "json", cwd=project_dir, env=env)
    events = [json.loads(ln) for ln in again.stderr.splitlines()[:-1]]
    assert [(e["event"], e.get("layer") or e.get("format"), e.get("state", e.get("composed"))) for e in events] == [
        ("layer-finished", "base", "cached"), ("layer-finished", "config", "cached"),
        ("layer-finished", "extra", "cached"), ("export-finished", "tar.gz", False)]


def test_json_report_keeps_its_meaning_and_log_goes_where_asked(project_dir, store_dir, tmp_path):
    log = tmp_path / "build.log"
    r = run_cli("build", "--json", "--log", str(log), cwd=project_dir, env={"LXCLAYER_STORE": str(store_dir)})
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [x["state"] for x in report["layers"]] == ["built", "built", "built"]
    assert r.stderr == ""  # --json alone: nothing but warnings on stderr
    assert "built    config" in log.read_text()
    assert not (store_dir / "logs").exists()


def test_log_path_is_under_the_store_named_by_time_and_template(tmp_path):
    p = log_path(Store(tmp_path).logs_dir(), "debian-13/x", when=0)
    assert p == tmp_path / "logs" / "19700101T000000-debian-13_x.log"


# --- program layers: a script layer on a small real root (dash and its libraries) ------------

def small_root_tar(dest: Path) -> None:
    """A root file system that can run /bin/sh: the host's dash and the libraries it links."""
    out = subprocess.run(["ldd", "/bin/dash"], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"(/\S+\.so[.\d]*)", out)
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        def add_dir(name: str) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1600000000
            tf.addfile(ti)
        for d in (".", "./bin", "./etc", "./tmp", "./usr", "./usr/sbin", "./lib", "./lib64",
                  "./lib/x86_64-linux-gnu"):
            add_dir(d)
        def add_file(src: str, name: str) -> None:
            ti = tf.gettarinfo(os.path.realpath(src), arcname=name)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mtime = 1600000000
            with open(os.path.realpath(src), "rb") as f:
                tf.addfile(ti, f)
        add_file("/bin/dash", "./bin/sh")
        for lib in libs:
            add_file(lib, "." + lib)


SCRIPT_OK = "i=0\nwhile [ $i -lt 300 ]; do echo \"line $i of the script\"; i=$((i+1)); done\necho done > /etc/late\n"
SCRIPT_FAIL = "i=1\nwhile [ $i -le 30 ]; do echo \"out $i\"; i=$((i+1)); done\nexit 3\n"


def program_project(root: Path, script: str) -> Path:
    require_root()
    require_tools("unshare", "chroot", "ldd")
    layers = root / "layers"
    (layers / "base").mkdir(parents=True)
    small_root_tar(layers / "base" / "root.tar")
    import hashlib

    sha = hashlib.sha256((layers / "base" / "root.tar").read_bytes()).hexdigest()
    (layers / "base" / "layer.toml").write_text(f'kind = "import"\npath = "root.tar"\nsha256 = "{sha}"\n')
    (layers / "late").mkdir()
    (layers / "late" / "run.sh").write_text(script)
    (layers / "late" / "layer.toml").write_text('kind = "script"\nscript = "run.sh"\nrequires = ["base"]\n')
    (layers / "template.toml").write_text(
        'name = "prog"\nversion = "1"\nrelease = 1\narch = "amd64"\nformats = ["tar.gz"]\n'
        'source_date_epoch = 1700000000\nlayers = ["base", "late"]\n')
    (root / "locks").mkdir()
    return root


def run_in_pty(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run lxclayer with stderr (and stdout) on a pseudo-terminal; all it wrote, raw."""
    full = dict(os.environ, **env, TERM="xterm", COLUMNS="120", LINES="40",
                PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "lxclayer", *args], cwd=cwd, env=full, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the other side is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_tty_shows_live_lines_and_no_command_lines_without_v(tmp_path):
    proj = program_project(tmp_path / "proj", SCRIPT_OK)
    env = {"LXCLAYER_STORE": str(tmp_path / "store")}
    rc, out = run_in_pty(["build"], proj, env)
    assert rc == 0, out
    assert re.search(r"[|/\\-] building late +\d+\.\ds", out), out  # the live line of the running layer
    assert "\x1b[J" in out  # redrawn in place
    assert re.search(rf"built late in {SECS}s \(programs {SECS}s\)", out), out
    assert "cached" not in out and "built base in" in out
    assert "$ " not in out and "/bin/sh -e" not in out and "line 299 of the script" not in out
    log = sorted((tmp_path / "store" / "logs").glob("*-prog.log"))
    logged = log[-1].read_text()
    assert "chroot" in logged and "/bin/sh -e /run/lxclayer/layer/run.sh" in logged
    assert "late| line 299 of the script" in logged

    shutil.rmtree(proj / "dist")
    (proj / "layers" / "late" / "run.sh").write_text(SCRIPT_OK.replace("300", "301"))
    rc, out = run_in_pty(["build", "-v"], proj, env)
    assert rc == 0, out
    assert "$ /usr/sbin/chroot" in out and "late| line 300 of the script" in out


def test_a_failing_program_shows_its_last_lines_and_the_log(tmp_path):
    proj = program_project(tmp_path / "proj", SCRIPT_FAIL)
    store = tmp_path / "store"
    for mode in ("plain", "tty"):
        r = run_cli("build", "--progress", mode, cwd=proj, env={"LXCLAYER_STORE": str(store)})
        assert r.returncode == 2, r.stderr
        lines = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", r.stderr).replace("\r", "\n").splitlines()
        err = [i for i, ln in enumerate(lines) if ln.startswith("lxclayer: error: ")]
        assert len(err) == 1, r.stderr
        after = lines[err[0]:]
        assert after[0] == "lxclayer: error: layers/late/layer.toml: key script: run.sh failed with exit code 3: out 30"
        assert re.fullmatch(r"last 20 lines of `sh -e /run/lxclayer/layer/run.sh` \(exit code 3\):", after[1]), after[1]
        assert after[2:22] == [f"  | out {i}" for i in range(11, 31)]
        m = re.fullmatch(r"full log: (.*)", after[22])
        assert m and len(after) == 23, r.stderr
        logged = Path(m.group(1)).read_text()
        assert Path(m.group(1)).parent == store / "logs"
        assert all(f"late| out {i}\n" in logged for i in range(1, 31))
        assert "out 1\n" not in r.stderr  # only the last 20 on the terminal


# --- the renderers in-process --------------------------------------------------------------

class Stream:
    def __init__(self, tty: bool):
        self.text = ""
        self.tty = tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None: ...

    def isatty(self) -> bool:
        return self.tty


def test_tty_draws_download_and_export_bars_and_clears_them():
    s = Stream(tty=True)
    c = Console("auto", stream=s)
    assert c.mode == "tty"
    c(ev.LayerStarted(layer="redis", kind="apt", reasons=[]))
    c(ev.LayerStep(layer="redis", message="downloading 17 packages (59.2 MB)"))
    c(ev.DownloadProgress(layer="redis", what="packages", files_done=3, files_total=17, bytes_done=12_000_000,
                          bytes_total=59_200_000, rate=8_100_000))
    c.renderer._draw()  # type: ignore[attr-defined]
    assert "building redis" in s.text and "downloading 17 packages" in s.text
    assert "redis: 3/17 packages [####......" in s.text and "12.0 MB/59.2 MB  8.1 MB/s" in s.text
    c(ev.DownloadProgress(layer="redis", what="packages", files_done=17, files_total=17, bytes_done=59_200_000,
                          bytes_total=59_200_000, rate=8_000_000, done=True))
    c(ev.LayerFinished(layer="redis", kind="apt", state="built", output="0" * 32, seconds=3.8, program_seconds=2.4))
    c(ev.ExportStarted(format="tar.gz", file="x.tar.gz"))
    c(ev.ExportProgress(format="tar.gz", bytes_done=50, bytes_total=100, rate=10_000_000))
    c.renderer._draw()  # type: ignore[attr-defined]
    assert "composing x.tar.gz [############............] 50 B/100 B" in s.text
    c.close()
    assert "built redis in 3.8s (programs 2.4s)\n" in s.text
    assert "downloaded 17 packages (59.2 MB) in 7.4s (8.0 MB/s)" in s.text
    assert s.text.endswith("\x1b[J")  # the live area is gone when the console closes
    assert Console("auto", stream=Stream(tty=False)).mode == "plain"


def test_plain_says_how_far_a_long_download_is(monkeypatch):
    from lxclayer.progress import render

    s = Stream(tty=False)
    c = Console("plain", stream=s)
    monkeypatch.setattr(render.Plain, "PROGRESS_EVERY", 0.0)
    c(ev.DownloadProgress(layer="redis", what="packages", files_done=3, files_total=17, bytes_done=12_000_000,
                          bytes_total=59_200_000, rate=8_100_000))
    assert s.text == "    redis: downloading 20% (12.0 MB of 59.2 MB, 8.1 MB/s)\n"


@pytest.mark.parametrize("mode", ["plain", "json"])
def test_no_control_characters_outside_tty(mode):
    s = Stream(tty=True)
    c = Console(mode, stream=s)
    c(ev.LayerStarted(layer="a", kind="files"))
    c(ev.ExportStarted(format="oci", file="a.tar"))
    c.close()
    assert "\x1b" not in s.text and "\r" not in s.text
