"""`lxclayer boot-test ARCHIVE`: deploy a template the way Proxmox VE does and check it.

unpack (as `pct create`) -> PVE's changes -> lxc-start (PVE-like config, nesting on) ->
`systemctl is-system-running --wait` -> declared checks -> faults -> reboot -> checks again.
Everything the run created is removed at the end, also after a failure, a timeout, Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import ArchiveError, UserError
from . import checks as checks_mod
from . import pve
from .container import Container
from .lxcconf import LxcSettings, apparmor_enabled, config_text
from .network import PrivateNetwork
from .report import CheckResult, FailedUnit, Report
from .rootfs import RootFS
from .spec import Check, Fault
from .unpack import archive_suffix, ensure_subids, unpack
from .workspace import Workspace, sweep_stale

REQUIRED_TOOLS = {
    "lxc-start": "lxc", "lxc-attach": "lxc", "lxc-stop": "lxc", "lxc-info": "lxc",
    "lxc-usernsexec": "lxc", "newuidmap": "uidmap", "tar": "tar",
}
JOURNAL_LINES = 20
SYSTEM_CHECK = "systemd is-system-running"


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived; turned into SystemExit after the cleanup."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def preflight(archive: Path) -> None:
    if os.geteuid() != 0:
        raise UserError("boot-test needs root (it unpacks with lxc-usernsexec and starts an LXC "
                        "container); run it with sudo")
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if not shutil.which(tool)})
    if missing:
        tools = [t for t, p in REQUIRED_TOOLS.items() if p in missing and not shutil.which(t)]
        raise UserError(f"boot-test needs {', '.join(tools)}: install Debian's "
                        f"{' '.join(missing)} package{'s' if len(missing) > 1 else ''}")
    if not Path("/usr/share/lxc/config/debian.common.conf").exists():
        raise UserError("boot-test needs /usr/share/lxc/config/debian.common.conf: install "
                        "Debian's lxc-templates package (its LXC configs for Debian guests)")
    archive_suffix(archive)
    if not archive.exists():
        raise ArchiveError("no such file", file=str(archive))
    if not os.access(archive, os.R_OK) or not archive.is_file():
        raise ArchiveError("cannot read the archive (not a readable file)", file=str(archive))


class _Signals:
    """While the test runs, SIGINT raises KeyboardInterrupt and SIGTERM/SIGHUP raise
    Terminated; while it cleans up, signals are only noted, so the cleanup always finishes."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.cleaning = False
        self.seen: list[int] = []
        self._old: dict[int, object] = {}

    def _handler(self, signum, frame):
        if self.cleaning:
            self.seen.append(signum)
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class _Run:
    def __init__(self, archive: Path, checks: list[Check], faults: list[Fault], *, timeout: float,
                 reboot: bool, network: bool, progress: Callable[[str], None] | None,
                 hostname: str | None, memory_mb: int | None):
        self.archive = archive
        self.checks = checks
        self.faults = faults
        self.timeout = timeout
        self.reboot = reboot
        self.want_network = network
        self.say = progress or (lambda msg: None)
        self.hostname_opt = hostname
        self.memory_mb = memory_mb
        self.t_begin = time.monotonic()
        self.ws: Workspace | None = None
        self.net: PrivateNetwork | None = None
        self.container: Container | None = None
        self.report: Report | None = None

    # -- steps ---------------------------------------------------------------------------
    def execute(self) -> Report:
        for d in sweep_stale():
            self.say(f"removed leftovers of an earlier run: {d}")
        self.ws = ws = Workspace.create()
        hostname = self.hostname_opt or ws.name
        r = self.report = Report(archive=str(self.archive), container=ws.name, hostname=hostname)

        self.say(f"boot test {ws.name}: unpacking {self.archive.name} as pct create does")
        changed = ensure_subids()
        if changed:
            r.notes.append(f"added root:100000:65536 to {', '.join(changed)}")
        t = time.monotonic()
        unpack(self.archive, ws.rootfs)
        r.times["unpack"] = time.monotonic() - t

        self._setup_network()
        self.say("applying what Proxmox writes at create and start")
        fs = RootFS(ws.rootfs)
        settings = pve.Settings(hostname=hostname, dhcp=self.net is not None,
                                nameservers=[self.net.gateway] if self.net else [])
        try:
            r.notes += pve.apply_create(fs, settings, rng=random.Random())
            pve.apply_start(fs, settings)
        except OSError as e:
            raise ArchiveError(f"Proxmox's setup of the container would fail: {e}",
                               file=str(self.archive)) from None

        ws.config.write_text(config_text(LxcSettings(
            name=ws.name, hostname=hostname, rootfs=ws.rootfs,
            phys_link=self.net.names.container_end if self.net else None,
            apparmor=apparmor_enabled(), memory_mb=self.memory_mb,
            log_file=ws.dir / "lxc.log", console_log=ws.dir / "console.log")))

        self.container = c = Container(ws.name, ws.lxcpath)
        self.say(f"starting container {ws.name}")
        t_start = time.monotonic()
        res = c.start()
        if res.returncode != 0:
            log = self._file_tail(ws.dir / "lxc.log", 200)
            errors = [line.split(" - ", 2)[-1] for line in log if " ERROR " in line]
            why = errors[0] if errors else (res.stderr.strip().splitlines() or ["failed"])[0]
            r.results.append(CheckResult(name="lxc-start", phase="boot", ok=False, step="system",
                                         seconds=time.monotonic() - t_start, detail=why))
            r.error = f"the container did not start: {why}"
            r.failed_units.append(FailedUnit(name="lxc-start (lxc.log)", phase="boot",
                                             journal=log[-15:]))
            return self._finish()

        if not self._boot_phase("boot", t_start):
            return self._finish()
        self._address()
        ok = self._run_checks("boot")
        if ok and not any(x.ok is False for x in r.results):
            r.seconds_to_green = time.monotonic() - self.t_begin
            r.seconds_from_start_to_green = time.monotonic() - t_start
        t = time.monotonic()
        for fault in self.faults:
            self._fault(fault)
        if self.faults:
            r.times["faults"] = time.monotonic() - t
        self._collect_failed_units("boot", only_if_failed=True)

        if self.reboot:
            self.say("rebooting the container")
            old = c.init_pid()
            t_rb = time.monotonic()
            c.attach(["systemctl", "reboot"], timeout=30)
            if not c.wait_new_init(old, t_rb + self.timeout):
                r.results.append(CheckResult(name="reboot", phase="reboot", ok=False, step="system",
                                             seconds=time.monotonic() - t_rb,
                                             detail=f"no new init within {self.timeout:g} s"))
                r.error = "the container did not come back after `systemctl reboot`"
                return self._finish()
            if self._boot_phase("reboot", t_rb):
                self._run_checks("reboot")
                self._collect_failed_units("reboot", only_if_failed=True)
        return self._finish()

    def _setup_network(self) -> None:
        r = self.report
        assert r is not None and self.ws is not None
        if not self.want_network:
            r.network, r.network_note = "loopback", "network turned off"
            return
        pn = PrivateNetwork(names=self.ws.names, workdir=self.ws.dir)
        missing = pn.missing_tools()
        if missing:
            r.network, r.network_note = "loopback", f"no DHCP network: {', '.join(missing)} missing"
            self.say(f"network: loopback only ({', '.join(missing)} missing)")
            return
        self.net = pn  # assigned first, so the cleanup finds whatever setup made
        try:
            pn.setup()
        except (RuntimeError, OSError) as e:
            self.net = None
            r.network, r.network_note = "loopback", f"no DHCP network: {e}"
            self.say(f"network: loopback only ({e})")
            return
        r.network = "dhcp"
        r.network_note = f"private {pn.subnet} in namespace {pn.names.netns}"
        self.say(f"network: eth0 by DHCP on {pn.subnet} (namespace {pn.names.netns})")

    def _boot_phase(self, phase: str, t_start: float) -> bool:
        """Wait for systemd; add the system row. False when checks cannot run at all."""
        r, c = self.report, self.container
        assert r is not None and c is not None
        self.say(f"{phase}: waiting for systemctl is-system-running --wait")
        state, _ = c.wait_system(t_start + self.timeout)
        seconds = time.monotonic() - t_start
        r.times[phase] = seconds
        ok = state == "running"
        detail = state
        if state == "degraded":
            units = self._failed_unit_names()
            detail = "degraded; failed units: " + (", ".join(units) or "(none listed)")
        elif state.startswith("timeout"):
            jobs = c.attach(["systemctl", "list-jobs", "--no-legend", "--no-pager"], timeout=20)
            rows = [line.split() for line in jobs.stdout.splitlines() if len(line.split()) >= 4]
            # The running jobs are what the others wait for: name them first.
            rows.sort(key=lambda f: f[3] != "running")
            waiting = [f"{f[1]} {f[3]}" for f in rows][:8]
            detail = (f"not up within {self.timeout:g} s ({state.split(': ', 1)[-1]})"
                      + (f"; waiting jobs: {', '.join(waiting)}" if waiting else ""))
            r.error = f"{phase}: systemd did not finish starting within {self.timeout:g} s"
        elif state == "stopped":
            detail = "the container stopped while booting"
            r.error = f"{phase}: the container stopped while booting (its init exited)"
            assert self.ws is not None
            console = self._file_tail(self.ws.dir / "console.log", 30)
            if console:
                r.failed_units.append(FailedUnit(name="console", phase=phase, journal=console))
        r.results.append(CheckResult(name=SYSTEM_CHECK, phase=phase, ok=ok, seconds=seconds,
                                     detail=detail, step="system"))
        self.say(f"{phase}: {state} after {seconds:.1f} s")
        if state in ("stopped",):
            return False
        if state.startswith("timeout"):
            self._collect_failed_units(phase, only_if_failed=False)
            return False
        return True

    def _runner(self) -> checks_mod.CheckRunner:
        assert self.container is not None
        if not hasattr(self, "_check_runner"):
            self._check_runner = checks_mod.CheckRunner(self.container.attach)
        return self._check_runner

    def _run_checks(self, phase: str, checks: list[Check] | None = None, step: str = "check") -> bool:
        r = self.report
        assert r is not None
        all_ok = True
        t = time.monotonic()
        for check in (self.checks if checks is None else checks):
            out = self._runner().run(check)
            r.results.append(CheckResult(name=check.name, phase=phase, ok=out.ok, seconds=out.seconds,
                                         detail=out.detail, step=step, attempts=out.attempts))
            self.say(f"{phase}: {check.name}: {'ok' if out.ok else 'FAIL'} ({out.seconds:.1f} s)")
            all_ok &= out.ok
        if checks is None:
            r.times["checks" if phase == "boot" else f"checks ({phase})"] = time.monotonic() - t
        return all_ok

    def _fault(self, fault: Fault) -> None:
        r = self.report
        assert r is not None
        phase = f"fault:{fault.name}"
        self.say(f"{phase}: injecting")
        out = self._runner().command(fault.inject)
        r.results.append(CheckResult(name=" ".join(fault.inject), phase=phase, ok=out.ok,
                                     seconds=out.seconds, detail=out.detail, step="inject"))
        self._run_checks(phase, fault.expect, step="expect")
        self.say(f"{phase}: repairing")
        out = self._runner().command(fault.repair)
        r.results.append(CheckResult(name=" ".join(fault.repair), phase=phase, ok=out.ok,
                                     seconds=out.seconds, detail=out.detail, step="repair"))
        self._run_checks(phase, fault.recover, step="recover")

    def _failed_unit_names(self) -> list[str]:
        assert self.container is not None
        res = self.container.attach(
            ["systemctl", "--failed", "--plain", "--no-legend", "--no-pager"], timeout=30)
        return [line.split()[0] for line in res.stdout.splitlines() if line.split()]

    def _collect_failed_units(self, phase: str, *, only_if_failed: bool) -> None:
        r, c = self.report, self.container
        assert r is not None and c is not None
        phases = {phase} | ({p.phase for p in r.results if p.phase.startswith("fault:")}
                            if phase == "boot" else set())
        if only_if_failed and all(x.ok for x in r.results if x.phase in phases):
            return
        for unit in self._failed_unit_names():
            j = c.attach(["journalctl", "-b", "-u", unit, "-n", str(JOURNAL_LINES), "--no-pager",
                          "-o", "short-precise"], timeout=30)
            lines = [x for x in j.stdout.splitlines() if x.strip()][-JOURNAL_LINES:]
            r.failed_units.append(FailedUnit(name=unit, phase=phase, journal=lines))

    def _address(self) -> None:
        r = self.report
        if self.net is None or r is None or self.ws is None:
            return
        leases = self.ws.dir / "dnsmasq.leases"
        try:
            lines = leases.read_text().split("\n")
        except OSError:
            lines = []
        addrs = [line.split()[2] for line in lines if len(line.split()) >= 3]
        if addrs:
            r.address = addrs[-1]
        else:
            r.notes.append("the container took no DHCP lease by the time systemd was up")

    @staticmethod
    def _file_tail(path: Path, n: int) -> list[str]:
        try:
            return [x for x in path.read_text(errors="replace").splitlines() if x.strip()][-n:]
        except OSError:
            return []

    def _finish(self) -> Report:
        r = self.report
        assert r is not None
        r.ok = bool(r.results) and all(x.ok for x in r.results) and not r.error
        return r

    # -- cleanup -------------------------------------------------------------------------
    def cleanup(self) -> list[str]:
        problems: list[str] = []
        if self.ws is None:
            return problems
        self.say("cleaning up")
        if self.net is not None:
            # The container must give the interface back before the namespace goes.
            from .workspace import stop_container

            if self.ws.config.exists():
                problems += stop_container(self.ws.name, self.ws.lxcpath)
            problems += self.net.teardown()
        problems += self.ws.remove()
        return problems


def boot_test(archive: Path, checks: list[Check], faults: list[Fault], *, timeout: float = 300,
              reboot: bool = True, network: bool = True,
              progress: Callable[[str], None] | None = None, hostname: str | None = None,
              memory_mb: int | None = None) -> Report:
    """Boot-test `archive` as Proxmox VE would deploy it; see the module docstring.

    Raises UserError for what the user must fix (not root, tools missing, archive unreadable,
    unpacking failing as `pct create` would). A failing check is a row with ok=False in the
    returned Report. Ctrl-C raises KeyboardInterrupt and SIGTERM/SIGHUP SystemExit(128+n),
    both after everything was removed."""
    archive = Path(archive)
    preflight(archive)
    checks_mod.validate(checks, faults)
    run = _Run(archive, checks, faults, timeout=timeout, reboot=reboot, network=network,
               progress=progress, hostname=hostname, memory_mb=memory_mb)
    t0 = time.monotonic()
    try:
        with _Signals() as signals:
            try:
                report = run.execute()
            finally:
                signals.cleaning = True
                problems = run.cleanup()
    except Terminated as e:
        raise SystemExit(128 + e.signum) from None
    if signals.seen:
        if signal.SIGINT in signals.seen:
            raise KeyboardInterrupt
        raise SystemExit(128 + signals.seen[0])
    report.times["total"] = time.monotonic() - t0
    if problems:
        report.notes += [f"cleanup: {p}" for p in problems]
    return report
