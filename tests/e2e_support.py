"""Guards for end-to-end tests: skip with a reason when the machine lacks what a test needs,
but FAIL instead when LXCLAYER_REQUIRE_E2E=1 (CI), so a missing tool cannot pass silently."""

from __future__ import annotations

import os
import shutil

import pytest


def e2e_required() -> bool:
    return os.environ.get("LXCLAYER_REQUIRE_E2E") == "1"


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under LXCLAYER_REQUIRE_E2E=1."""
    if e2e_required():
        pytest.fail(f"{reason} (LXCLAYER_REQUIRE_E2E=1, so this is a failure, not a skip)",
                    pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        unavailable("needs root")


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        unavailable(f"needs {', '.join(missing)} on PATH")


def require_lxc_guest_configs() -> None:
    """boot-test includes LXC's config for Debian guests, which Debian ships in lxc-templates."""
    if not os.path.exists("/usr/share/lxc/config/debian.common.conf"):
        unavailable("needs /usr/share/lxc/config/debian.common.conf (Debian's lxc-templates)")
