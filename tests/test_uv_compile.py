"""The uv builder byte-compiles a layer's venvs in one run (builders/uv.py COMPILE_ALL): the same
.pyc bytes, file for file, as `python -m compileall -q -q -j 0 --invalidation-mode checked-hash`
run on each venv, which is what the locks' outputs were built with."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from lxclayer.builders.uv import COMPILE_ALL


def _tree(root: Path) -> None:
    for venv in ("a", "b"):
        lib = root / venv / "lib/python3/site-packages"
        (lib / "pkg/sub").mkdir(parents=True)
        (lib / "pkg/__init__.py").write_text("from .sub import x\n")
        (lib / "pkg/sub/__init__.py").write_text(f"x = {venv!r}\ndef f():\n    return [i for i in range(3)]\n")
        (lib / "pkg/data.txt").write_text("not python\n")
        (lib / ".hidden.py").write_text("y = 1\n")
        (lib / "linked").symlink_to(lib / "pkg", target_is_directory=True)  # not followed


def _pycs(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.pyc"))}


def test_one_run_writes_the_pycs_compileall_writes_per_venv(tmp_path):
    _tree(tmp_path)
    env = dict(os.environ, PYTHONHASHSEED="0")
    libs = [str(tmp_path / venv / "lib") for venv in ("a", "b")]
    r = subprocess.run([sys.executable, "-c", COMPILE_ALL, *libs], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    ours = _pycs(tmp_path)
    for pyc in tmp_path.rglob("*.pyc"):
        pyc.unlink()
    for lib in libs:
        r = subprocess.run([sys.executable, "-m", "compileall", "-q", "-q", "-j", "0", "--invalidation-mode",
                            "checked-hash", lib], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
    assert len(ours) == 6  # 3 modules in each venv, none again through the symbolic link
    assert ours == _pycs(tmp_path)


def test_a_module_that_does_not_compile_fails_the_run(tmp_path):
    _tree(tmp_path)
    (tmp_path / "b/lib/python3/site-packages/broken.py").write_text("def (:\n")
    r = subprocess.run([sys.executable, "-c", COMPILE_ALL, str(tmp_path / "a/lib"), str(tmp_path / "b/lib")],
                       capture_output=True, text=True)
    assert r.returncode == 1
