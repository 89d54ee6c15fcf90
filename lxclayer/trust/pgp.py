"""Detached OpenPGP signatures: made with Debian's `sq` (Sequoia), checked with `sqv`, the
verifier `pveam update` runs. No key material or passphrase ever reaches a message: errors name
the key file and quote sq's own first line of complaint."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from ..errors import UserError


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"`{name}` not found: install Debian's {package} package (apt-get install {package})")
    return path


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "no message"


def check_key_file(key: Path, warn: Callable[[str], None] | None = None) -> None:
    try:
        st = key.stat()
    except OSError as e:
        raise UserError(f"cannot read the OpenPGP key: {e.strerror or e}", file=str(key)) from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError("the OpenPGP key is not a regular file", file=str(key))
    if not os.access(key, os.R_OK):
        raise UserError("cannot read the OpenPGP key: permission denied", file=str(key))
    if st.st_mode & 0o077 and warn is not None:
        warn(f"{key}: the OpenPGP key is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 {key}")


def sign_detached(key: Path, data: Path) -> bytes:
    """An ASCII-armoured detached signature of the file `data` by the secret key in `key`."""
    sq = _tool("sq", "sq")
    try:
        r = subprocess.run([sq, "sign", "--detached", "--signer-key", str(key), str(data)],
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        raise UserError(f"sq could not sign {data.name}: {e}", file=str(key)) from None
    if r.returncode != 0 or not r.stdout.startswith(b"-----BEGIN PGP SIGNATURE-----"):
        raise UserError(f"sq could not sign {data.name} with this key: "
                        f"{_first_line(r.stderr.decode(errors='replace'))}", file=str(key))
    return r.stdout


def verify_detached(cert: Path, signature: Path, data: Path) -> tuple[bool, str]:
    """(good, what sqv said): does `signature` over `data` verify with the certificate(s) in
    `cert`? Exactly `sqv --keyring CERT SIG FILE`, as pveam runs it."""
    sqv = _tool("sqv", "sqv")
    try:
        r = subprocess.run([sqv, "--keyring", str(cert), str(signature), str(data)],
                           capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        return False, str(e)
    return r.returncode == 0, _first_line(r.stderr if r.returncode else r.stdout or r.stderr)
