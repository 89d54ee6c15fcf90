"""Every program lxclayer runs for a build sees the same process state, whatever the caller's."""

from __future__ import annotations

import os
import resource

from lxclayer import hermetic


def _probe(**kw) -> str:
    script = ('umask; pwd; ulimit -n; ulimit -c; env | sort; ls /proc/self/fd | sort -n | tr "\\n" " "')
    return hermetic.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True, **kw).stdout


def test_caller_umask_env_cwd_and_descriptors_do_not_reach_the_program(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "Pacific/Auckland")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o077)
    leaked = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY, 0o600)
    os.set_inheritable(leaked, True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096) if hard > 0 else soft, hard))
        out = _probe()
    finally:
        os.umask(old)
        os.close(leaked)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    lines = out.splitlines()
    assert lines[0] == "0022"
    assert lines[1] == "/"
    assert lines[2] == "1024"
    assert lines[3] == "0"
    env = dict(line.split("=", 1) for line in lines[4:-1] if "=" in line)
    assert env["TZ"] == "UTC" and env["LC_ALL"] == "C.UTF-8" and env["HOME"] == "/root"
    assert env["PATH"] == hermetic.PATH
    assert "PYTHONPATH" not in env and "http_proxy" not in env
    assert set(env) <= set(hermetic.BASE_ENV) | {"PWD", "SHLVL", "_", "OLDPWD"}
    # stdin, stdout, stderr and the descriptor ls itself opens for /proc/self/fd
    assert lines[-1].split() == ["0", "1", "2", "3"]


def test_resolution_gets_the_callers_proxy_and_trust_store_and_nothing_else(monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/site-ca.pem")
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    out = _probe(proxies=True, env={"APT_CONFIG": "/x"})
    assert "https_proxy=http://proxy.invalid:3128" in out
    assert "APT_CONFIG=/x" in out
    assert "SSL_CERT_FILE=/etc/site-ca.pem" in out
    assert "SSL_CERT_FILE" not in _probe()
    assert "LANG=C.UTF-8" in out and "de_DE" not in out



def test_realising_runs_under_umask_022_and_gives_the_callers_back(tmp_path):
    """lxclayer's own writes into a tree (sources.list, machine-id) must not follow the caller."""
    import threading

    old = os.umask(0o077)
    try:
        seen = []

        def write(name):
            with hermetic.fixed_umask():
                p = tmp_path / name
                p.write_text("x")
                seen.append(p.stat().st_mode & 0o777)

        with hermetic.fixed_umask():
            threads = [threading.Thread(target=write, args=(f"f{i}",)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert seen == [0o644] * 4
        assert os.umask(0o077) == 0o077  # the caller's umask is back
    finally:
        os.umask(old)
