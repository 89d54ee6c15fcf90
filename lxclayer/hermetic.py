"""The one way lxclayer runs a program for a build: nothing of the caller's process leaks in.

A layer's output must be a function of its input record, so a program that helps build it
(mmdebstrap, apt, dpkg, uv, gpg, a layer's script in a chroot) must not see anything of the
process that started lxclayer. Every such program is started by :func:`run` or :func:`popen`,
which give it:

- umask 022 (a file written with ``cat >`` gets mode 0644 whatever the caller's umask);
- an environment made from nothing (:data:`BASE_ENV` plus what the caller of :func:`run` names):
  no TZ, LANG, LC_*, PATH, HOME, PYTHON*, proxy or other variable of the caller's shell;
- fixed resource limits (:data:`LIMITS`): open files, core dumps, stack size;
- no inherited file descriptors (only stdin, stdout, stderr);
- the working folder ``/``;
- the signal dispositions of a fresh process, and SIGKILL when lxclayer dies.

lxclayer itself writes into the trees it builds (``/etc/apt/sources.list``, an emptied
``/etc/machine-id``, a repository key), so a layer is realised under :func:`fixed_umask`: the
process's own umask is 022 while any layer is being realised.

The host name and the network are fixed by running in namespaces: see
:func:`lxclayer.debian.chroot.run_isolated`, which starts ``unshare --uts [--net]`` through
:func:`popen` and sets the host name ``localhost``. Programs lxclayer runs only to *resolve*
pins (apt-get update on the host, ``uv pip compile``) need the network; they get the proxy and
TLS trust variables of the caller (:data:`NETWORK_VARS`), because what they fetch is pinned by sha256
before any build uses it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

UMASK = 0o022
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENV: dict[str, str] = {
    "PATH": PATH,
    "HOME": "/root",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "TZ": "UTC",
    "TERM": "dumb",
    "SHELL": "/bin/sh",
    "TMPDIR": "/tmp",
    # Byte-code written by maintainer scripts (py3compile) and by us marshals frozensets in hash
    # order: a fixed seed makes it the same in every build.
    "PYTHONHASHSEED": "0",
}
# (soft, hard) limits; RLIM_INFINITY where the caller's own hard limit allows it.
LIMITS: dict[int, tuple[int, int]] = {
    resource.RLIMIT_NOFILE: (1024, 1024 * 64),
    resource.RLIMIT_CORE: (0, 0),
    resource.RLIMIT_STACK: (8 << 20, resource.RLIM_INFINITY),
    resource.RLIMIT_FSIZE: (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
    resource.RLIMIT_NPROC: (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
}
# How the caller reaches the network: proxies and the TLS trust store (a site's own CA). Given
# only to programs that use the network; they change where bytes come from, never which bytes
# a build uses (those are pinned by sha256).
NETWORK_VARS = ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                "ALL_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")
PR_SET_PDEATHSIG = 1
# Loaded here, not in the child: between fork and exec (other threads may hold locks) the child
# only makes system calls.
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # no C library to call prctl with; the namespaces of run_isolated still clean up
    _LIBC = None


def environment(extra: Mapping[str, str] | None = None, *, proxies: bool = False) -> dict[str, str]:
    """The environment of a build program: :data:`BASE_ENV`, the caller's :data:`NETWORK_VARS`
    if `proxies` (a program that uses the network), then `extra`. Nothing else of ``os.environ``."""
    env = dict(BASE_ENV)
    if proxies:
        env.update({k: v for k in NETWORK_VARS if (v := os.environ.get(k)) is not None})
    env.update(extra or {})
    return env


_umask_lock = threading.Lock()
_umask_users = 0
_umask_saved = 0


@contextlib.contextmanager
def fixed_umask() -> Iterator[None]:
    """While inside (in any thread), this process's umask is :data:`UMASK`; the caller's is put
    back when the last user leaves (builds of several layers run in threads)."""
    global _umask_users, _umask_saved
    with _umask_lock:
        if _umask_users == 0:
            _umask_saved = os.umask(UMASK)
        _umask_users += 1
    try:
        yield
    finally:
        with _umask_lock:
            _umask_users -= 1
            if _umask_users == 0:
                os.umask(_umask_saved)


def _limit(which: int, soft: int, hard: int) -> None:
    _, have_hard = resource.getrlimit(which)
    if have_hard != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > have_hard):
        hard = have_hard  # an unprivileged process cannot raise its hard limit
    if hard != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or soft > hard):
        soft = hard
    resource.setrlimit(which, (soft, hard))


def _child_setup() -> None:  # runs in the child between fork and exec: no allocation-heavy work
    os.umask(UMASK)
    for which, (soft, hard) in LIMITS.items():
        try:
            _limit(which, soft, hard)
        except (ValueError, OSError):
            pass  # a limit this kernel does not have; the others still apply
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _kwargs(env: Mapping[str, str] | None, proxies: bool, cwd: str) -> dict[str, Any]:
    return dict(env=environment(env, proxies=proxies), cwd=cwd, close_fds=True, restore_signals=True,
                preexec_fn=_child_setup)


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, proxies: bool = False, cwd: str = "/",
        **kw: Any) -> subprocess.CompletedProcess:
    """:func:`subprocess.run` with the fixed process state described above. `env` adds to
    :data:`BASE_ENV`; the other keywords (input, capture_output, text, check) pass through."""
    return subprocess.run(list(argv), **_kwargs(env, proxies, cwd), **kw)


def popen(argv: Sequence[str], *, env: Mapping[str, str] | None = None, proxies: bool = False, cwd: str = "/",
          **kw: Any) -> subprocess.Popen:
    """:class:`subprocess.Popen` with the fixed process state described above."""
    return subprocess.Popen(list(argv), **_kwargs(env, proxies, cwd), **kw)
