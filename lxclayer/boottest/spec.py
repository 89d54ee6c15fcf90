"""What a template declares to be checked after it boots (the `[[checks]]` and `[[faults]]`
tables of the template definition)."""

from typing import Any

import msgspec


class Check(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One check run against the booted container.

    Exactly one of `run` (a command run inside the container) or `http` (a URL fetched from
    inside the container) is given.
    """

    name: str
    run: list[str] | None = None
    http: str | None = None
    # For `run`: expected exit code and, optionally, a substring each of the output must contain.
    exit_code: int = 0
    stdout_contains: list[str] = []
    # For `http`: expected status and JSON fields (dotted path -> expected value).
    status: int = 200
    json: dict[str, Any] = {}
    # Retry the check until it passes or this many seconds have passed.
    within: float = 0.0
    # For `run`: run the command as this user inside the container (through `runuser -u`).
    user: str | None = None
    # Seconds one attempt may take before it counts as failed.
    timeout: float = 60.0


class Fault(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A fault injected into the running container, the checks that must then hold, and the
    repair after which the `recover` checks must hold again.

    `inject` and `repair` are one command each, given as an argument vector like `Check.run`
    (use `["sh", "-c", "..."]` for a shell line); each must exit 0.
    """

    name: str
    inject: list[str]
    expect: list[Check]
    repair: list[str]
    recover: list[Check] = []
