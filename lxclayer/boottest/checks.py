"""Running the declared checks inside the container and judging their output.

The judging is pure (`judge_run`, `judge_http`); `CheckRunner` runs commands through an
`attach(argv, timeout) -> Result` callable and retries until a check passes or its `within`
seconds are over.

HTTP checks fetch the URL from inside the container, with python3 where the template has it,
else with curl. JSON fields are dotted paths: `checks.redis.ok`, `items.0.name`; a `*` stands
for every element of a list or every value of an object (`checks.*.ok`: all of them), and there
must be at least one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import DefinitionError
from .container import Result
from .spec import Check, Fault

HTTP_PY = r"""
import json, sys, urllib.request, urllib.error
url, timeout = sys.argv[1], float(sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(url, headers={"User-Agent": "lxclayer-boot-test"})
try:
    r = opener.open(req, timeout=timeout)
    status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
except Exception as e:
    print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
    sys.exit(0)
print(json.dumps({"status": status, "body": body.decode("utf-8", "replace")}))
"""


def problems(check: Check) -> str | None:
    """Why a check cannot run as declared, or None."""
    if (check.run is None) == (check.http is None):
        return "give exactly one of `run` (a command) or `http` (a URL)"
    if check.run is not None and not check.run:
        return "`run` is an empty command"
    if check.http is not None and not check.http.startswith(("http://", "https://")):
        return "`http` must be an http:// or https:// URL"
    if check.within < 0 or check.timeout <= 0:
        return "`within` must be >= 0 and `timeout` > 0"
    return None


def validate(checks: list[Check], faults: list[Fault]) -> None:
    for i, c in enumerate(checks):
        if why := problems(c):
            raise DefinitionError(f"check {c.name!r}: {why}", key=f"checks[{i}]")
    for i, f in enumerate(faults):
        if not f.inject or not f.repair:
            raise DefinitionError(f"fault {f.name!r}: `inject` and `repair` must be commands",
                                  key=f"faults[{i}]")
        for j, c in enumerate(f.expect):
            if why := problems(c):
                raise DefinitionError(f"check {c.name!r}: {why}", key=f"faults[{i}].expect[{j}]")
        for j, c in enumerate(f.recover):
            if why := problems(c):
                raise DefinitionError(f"check {c.name!r}: {why}", key=f"faults[{i}].recover[{j}]")


# -- judging (pure) ----------------------------------------------------------------------
def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def judge_run(check: Check, r: Result) -> tuple[bool, str]:
    if r.timed_out:
        return False, f"no answer within {check.timeout:g} s"
    if r.returncode != check.exit_code:
        out = _short(r.stderr or r.stdout)
        return False, f"exit code {r.returncode} (expected {check.exit_code})" + (f": {out}" if out else "")
    for s in check.stdout_contains:
        if s not in r.stdout:
            return False, f"output lacks {s!r}: {_short(r.stdout) or '(empty)'}"
    return True, f"exit code {r.returncode}"


def lookup(data: Any, path: str) -> list[Any]:
    """All values at dotted `path` (several with `*`); [] when there is none."""
    values = [data]
    for part in path.split("."):
        nxt = []
        for v in values:
            if part == "*":
                if isinstance(v, list):
                    nxt.extend(v)
                elif isinstance(v, dict):
                    nxt.extend(v.values())
            elif isinstance(v, dict):
                if part in v:
                    nxt.append(v[part])
            elif isinstance(v, list) and part.lstrip("-").isdigit():
                i = int(part)
                if -len(v) <= i < len(v):
                    nxt.append(v[i])
        values = nxt
    return values


def _same(a: Any, b: Any) -> bool:
    # JSON true is not 1; 200 equals 200.0.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def judge_http(check: Check, status: int | None, body: str, error: str | None = None) -> tuple[bool, str]:
    if error:
        return False, error
    assert status is not None
    if status != check.status:
        return False, f"status {status} (expected {check.status}): {_short(body, 160) or '(empty)'}"
    for s in check.stdout_contains:
        if s not in body:
            return False, f"status {status}, body lacks {s!r}"
    if check.json:
        try:
            data = json.loads(body)
        except ValueError:
            return False, f"status {status}, body is not JSON: {_short(body, 120)}"
        for path, want in check.json.items():
            got = lookup(data, path)
            if not got:
                return False, f"status {status}, JSON has no {path}"
            bad = [g for g in got if not _same(g, want)]
            if bad:
                return False, (f"status {status}, JSON {path} = {json.dumps(bad[0])} "
                               f"(expected {json.dumps(want)})")
    return True, f"status {status}"


def http_command(tool: str, url: str, timeout: float) -> list[str]:
    if tool == "python3":
        return ["python3", "-c", HTTP_PY, url, f"{timeout:g}"]
    return ["curl", "-sS", "--noproxy", "*", "-m", f"{timeout:g}", "-o", "-",
            "-w", "\n%{http_code}", url]


def parse_http(tool: str, r: Result) -> tuple[int | None, str, str | None]:
    """(status, body, error) from the output of :func:`http_command`."""
    if r.timed_out:
        return None, "", "no answer in time"
    if tool == "python3":
        try:
            data = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None, "", f"python3 failed: {_short(r.stderr or r.stdout) or r.returncode}"
        if "error" in data:
            return None, "", data["error"]
        return int(data["status"]), data.get("body", ""), None
    body, _, code = r.stdout.rpartition("\n")
    if r.returncode != 0 or not code.strip().isdigit() or code.strip() == "000":
        return None, "", f"curl failed ({r.returncode}): {_short(r.stderr) or 'no response'}"
    return int(code), body, None


# -- running -----------------------------------------------------------------------------
Attach = Callable[..., Result]


@dataclass
class Outcome:
    ok: bool
    detail: str
    seconds: float
    attempts: int


class CheckRunner:
    def __init__(self, attach: Attach, *, interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.attach = attach
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self._http_tool: str | None = None

    def http_tool(self) -> str | None:
        if self._http_tool is None:
            r = self.attach(["sh", "-c", "command -v python3 || command -v curl"], timeout=30)
            found = r.stdout.strip().splitlines()
            self._http_tool = found[0].rsplit("/", 1)[-1] if found else ""
        return self._http_tool or None

    def once(self, check: Check) -> tuple[bool, str]:
        if check.run is not None:
            argv = list(check.run)
            if check.user:
                argv = ["runuser", "-u", check.user, "--", *argv]
            return judge_run(check, self.attach(argv, timeout=check.timeout))
        tool = self.http_tool()
        if tool is None:
            return False, "the container has neither python3 nor curl to fetch the URL"
        r = self.attach(http_command(tool, check.http or "", check.timeout), timeout=check.timeout + 10)
        status, body, error = parse_http(tool, r)
        return judge_http(check, status, body, error)

    def run(self, check: Check) -> Outcome:
        t0 = self.clock()
        attempts = 0
        while True:
            attempts += 1
            ok, detail = self.once(check)
            elapsed = self.clock() - t0
            if ok or elapsed + self.interval > check.within:
                if not ok and attempts > 1:
                    detail += f" (still after {attempts} tries in {elapsed:.1f} s)"
                return Outcome(ok, detail, elapsed, attempts)
            self.sleep(self.interval)

    def command(self, argv: list[str], timeout: float = 120) -> Outcome:
        """A fault's inject or repair command: must exit 0."""
        t0 = self.clock()
        r = self.attach(list(argv), timeout=timeout)
        if r.timed_out:
            return Outcome(False, f"no end within {timeout:g} s", self.clock() - t0, 1)
        if r.returncode != 0:
            return Outcome(False, f"exit code {r.returncode}: {_short(r.stderr or r.stdout)}",
                           self.clock() - t0, 1)
        return Outcome(True, "exit code 0", self.clock() - t0, 1)
