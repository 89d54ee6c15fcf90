"""The outcome of a boot test: one row per check and phase, the failed units with their last
journal lines, and the times. A table for people, JSON (msgspec) for machines."""

import msgspec


class CheckResult(msgspec.Struct, kw_only=True):
    name: str
    # "boot", "reboot" or "fault:<name>"
    phase: str
    ok: bool
    seconds: float
    detail: str = ""
    # Within a fault: "inject", "expect", "repair" or "recover"; else "check" or "system".
    step: str = "check"
    attempts: int = 1


class FailedUnit(msgspec.Struct, kw_only=True):
    name: str
    phase: str
    journal: list[str] = []


class Report(msgspec.Struct, kw_only=True):
    archive: str
    container: str
    hostname: str = ""
    ok: bool = False
    # "dhcp": eth0 on a private bridge with DHCP, as on Proxmox; "loopback": no network device.
    network: str = "loopback"
    network_note: str = ""
    address: str = ""
    results: list[CheckResult] = []
    failed_units: list[FailedUnit] = []
    # Seconds: "unpack", "boot" (lxc-start to systemd running), "reboot", "total", ...
    times: dict[str, float] = {}
    # Seconds from the start of the boot test until every boot check had passed (None if not).
    seconds_to_green: float | None = None
    # Seconds from lxc-start until every boot check had passed (None if not).
    seconds_from_start_to_green: float | None = None
    # Why the test stopped early (boot timeout, container stopped, interrupted), if it did.
    error: str = ""
    notes: list[str] = []

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2)

    def to_table(self, *, journal: bool = True) -> str:
        return format_table(self, journal=journal)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]


def _fmt_seconds(s: float | None) -> str:
    return "-" if s is None else f"{s:.1f}s"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(report: Report, *, journal: bool = True, detail_width: int = 90) -> str:
    rows = [("PHASE", "CHECK", "RESULT", "TIME", "DETAIL")]
    for r in report.results:
        name = r.name if r.step in ("check", "expect", "recover", "system") else f"[{r.step}] {r.name}"
        if r.step in ("expect", "recover"):
            name = f"{r.step}: {r.name}"
        rows.append((r.phase, name, "ok" if r.ok else "FAIL", _fmt_seconds(r.seconds),
                     "" if r.ok else _clip(r.detail, detail_width)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)]
        lines.append("  ".join(cells + [row[4]]).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))

    if report.failed_units:
        lines.append("")
        for phase in dict.fromkeys(u.phase for u in report.failed_units):
            units = [u for u in report.failed_units if u.phase == phase]
            lines.append(f"Failed units ({phase}): " + ", ".join(u.name for u in units))
            if journal:
                for u in units:
                    lines.append(f"  --- journal of {u.name} (last {len(u.journal)} lines) ---")
                    lines += [f"  {line}" for line in u.journal] or ["  (no journal lines)"]
    lines.append("")
    net = {"dhcp": "eth0 by DHCP on a private bridge", "loopback": "loopback only"}.get(
        report.network, report.network)
    if report.address:
        net += f" ({report.address})"
    if report.network_note:
        net += f" - {report.network_note}"
    lines.append(f"Network: {net}")
    t = report.times
    parts = [f"{k} {_fmt_seconds(t[k])}" for k in ("unpack", "boot", "checks", "faults", "reboot", "total")
             if k in t]
    if parts:
        lines.append("Times: " + ", ".join(parts))
    if report.seconds_to_green is not None:
        lines.append(f"All boot checks green {_fmt_seconds(report.seconds_from_start_to_green)} after "
                     f"lxc-start ({_fmt_seconds(report.seconds_to_green)} after the boot test began)")
    for note in report.notes:
        lines.append(f"Note: {note}")
    if report.error:
        lines.append(f"Stopped early: {report.error}")
    failed = len(report.failed)
    verdict = "PASS" if report.ok else f"FAIL ({failed} of {len(report.results)} failed)" if failed \
        else "FAIL"
    lines.append(f"Boot test: {verdict}")
    return "\n".join(lines) + "\n"
