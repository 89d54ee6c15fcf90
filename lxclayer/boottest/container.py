"""The test container: lxc-start, lxc-attach, lxc-info, lxc-stop on a private lxcpath.

Everything runs in the host's network namespace (under `ip netns exec` the container's systemd
exits at once, as that command remounts /sys and with it the cgroup mounts).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ATTACH_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
# States of `systemctl is-system-running` after which waiting longer does not help.
FINAL_STATES = ("running", "degraded", "maintenance", "stopping")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    seconds: float = 0.0


class Container:
    def __init__(self, name: str, lxcpath: Path):
        self.name = name
        self.lxcpath = lxcpath

    def _args(self) -> list[str]:
        return ["-P", str(self.lxcpath), "-n", self.name]

    def start(self) -> Result:
        return run(["lxc-start", *self._args()], timeout=120)

    def stop(self, *, kill: bool = True, timeout: float = 60) -> Result:
        extra = ["-k"] if kill else ["-t", str(int(timeout))]
        return run(["lxc-stop", *self._args(), *extra], timeout=timeout + 30)

    def state(self) -> str:
        r = run(["lxc-info", *self._args(), "-sH"], timeout=30)
        return r.stdout.strip() if r.returncode == 0 else "UNKNOWN"

    def init_pid(self) -> int | None:
        r = run(["lxc-info", *self._args(), "-pH"], timeout=30)
        try:
            return int(r.stdout.strip())
        except ValueError:
            return None

    def attach(self, argv: list[str], *, timeout: float = 60) -> Result:
        env: list[str] = []
        for k, v in ATTACH_ENV.items():
            env += ["-v", f"{k}={v}"]
        return run(["lxc-attach", *self._args(), "--clear-env", *env, "--", *argv],
                   timeout=timeout)

    def system_state(self, timeout: float = 10) -> str:
        r = self.attach(["systemctl", "is-system-running"], timeout=timeout)
        return r.stdout.strip() or "unreachable"

    def wait_system(self, deadline: float) -> tuple[str, float]:
        """Wait until systemd in the container reaches a final state, or `deadline`
        (time.monotonic()) passes. Returns the state ("timeout: STATE" or "stopped" when it
        did not get there) and the seconds waited."""
        t0 = time.monotonic()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"timeout: {self.system_state()}", time.monotonic() - t0
            if self.state() != "RUNNING":
                return "stopped", time.monotonic() - t0
            r = self.attach(["systemctl", "is-system-running", "--wait"], timeout=remaining)
            out = r.stdout.strip()
            if out in FINAL_STATES:
                return out, time.monotonic() - t0
            # Not yet reachable (no bus yet) or still starting: try again shortly.
            time.sleep(0.2)

    def wait_new_init(self, old_pid: int | None, deadline: float) -> bool:
        """After a reboot: wait until the container runs with a new init."""
        while time.monotonic() < deadline:
            pid = self.init_pid()
            if pid is not None and pid != old_pid and self.state() == "RUNNING":
                return True
            time.sleep(0.2)
        return False


def run(argv: list[str], *, timeout: float | None = None, input: str | None = None) -> Result:
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                           input=input, stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return Result(-1, out, err, timed_out=True, seconds=time.monotonic() - t0)
    return Result(p.returncode, p.stdout, p.stderr, seconds=time.monotonic() - t0)
