"""Errors a user can cause and act on.

Every error raised for bad input is a :class:`UserError`: it names the place (a file, and
within it a key) and the reason. The CLI prints it on one line and exits with code 2, without
a traceback. Anything else that goes wrong is a bug and keeps its traceback.
"""

from __future__ import annotations

import re

import msgspec


class UserError(Exception):
    """Bad input or an environment the user must fix. Exit code 2."""

    exit_code = 2

    def __init__(self, reason: str, *, file: str | None = None, key: str | None = None):
        self.reason = reason
        self.file = file
        self.key = key
        super().__init__(self.message())

    def message(self) -> str:
        where = ""
        if self.file:
            where = str(self.file)
            if self.key:
                where += f": key {self.key}"
            where += ": "
        elif self.key:
            where = f"key {self.key}: "
        return f"{where}{self.reason}"


class DefinitionError(UserError):
    """A template or layer definition is invalid."""


class LockError(UserError):
    """The lockfile is invalid, or does not describe the build under --locked."""


class StoreCorruption(UserError):
    """A store entry does not match its recorded digest."""

    def __init__(self, reason: str, *, entry: str, layer: str | None = None):
        self.entry = entry
        self.layer = layer
        super().__init__(reason, file=entry)


class BuildError(UserError):
    """A builder failed for a reason the user can act on (missing tool, network, package)."""


class ArchiveError(UserError):
    """An archive given to a command is unreadable or violates the template rules."""


def msgspec_key(err: msgspec.ValidationError) -> tuple[str | None, str]:
    """Split msgspec's `reason - at `$.a.b[0]`` into ('a.b[0]', reason)."""
    text = str(err)
    key: str | None = None
    m = re.search(r" - at `\$(.*)`$", text)
    if m:
        key = m.group(1).lstrip(".") or None
        text = text[: m.start()]
    m = re.match(r"Object contains unknown field `(.+)`", text)
    if m:
        key = f"{key}.{m.group(1)}" if key else m.group(1)
        text = "unknown key (check the spelling; docs/layers.md lists the keys)"
    m = re.match(r"Object missing required field `(.+)`", text)
    if m:
        key = f"{key}.{m.group(1)}" if key else m.group(1)
        text = "required key is missing"
    return key, text
