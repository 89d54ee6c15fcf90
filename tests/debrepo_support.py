"""A tiny Debian archive for tests: real .debs made with dpkg-deb, indexed with
dpkg-scanpackages, served over loopback HTTP by a thread; it "moves on" like Debian's mirror
(a new version in a -security suite, an old .deb gone from the pool)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import subprocess
import threading
from pathlib import Path

from .e2e_support import require_tools

ARCH = "amd64"


def make_deb(out: Path, name: str, version: str, *, arch: str = "all", payload: str = "") -> Path:
    """A real .deb (dpkg-deb --build) installing /usr/share/<name>/VERSION."""
    require_tools("dpkg-deb")
    src = out.parent / f".build-{name}-{version}"
    (src / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (src / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: t <t@example.org>\n"
        f"Priority: optional\nSection: misc\nSource: {name}-src\nDescription: test package\n a test\n")
    d = src / "usr/share" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "VERSION").write_text(f"{version}\n{payload}")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(src), str(out)], check=True,
                   capture_output=True, env={"SOURCE_DATE_EPOCH": "1700000000", "PATH": "/usr/bin:/bin"})
    return out


class Archive:
    """`root/<archive>/pool/...` and `root/<archive>/dists/<suite>/...` (unsigned: sources use
    [trusted=yes])."""

    def __init__(self, root: Path, gnupghome: Path | None = None):
        self.root = root
        self.gnupghome = gnupghome  # when set, every Release is signed as InRelease with its key

    def add(self, archive: str, suite: str, name: str, version: str, *, pool: str = "pool/main") -> Path:
        fn = f"{name}_{version.replace(':', '%3a')}_all.deb"
        deb = make_deb(self.root / archive / pool / name[0] / f"{name}-src" / fn, name, version)
        self.index(archive, suite)
        return deb

    def index(self, archive: str, suite: str) -> None:
        """(Re)write dists/<suite>: Packages of every .deb under the pool the suite uses."""
        require_tools("dpkg-scanpackages")
        base = self.root / archive
        # (an -updates suite stays empty here: its packages would share the release's pool)
        pool = "pool/updates" if suite.endswith("-security") else None if suite.endswith("-updates") else "pool/main"
        text = ""
        if pool and (base / pool).exists():
            text = subprocess.run(["dpkg-scanpackages", "-m", pool, "/dev/null"], cwd=base, check=True,
                                  capture_output=True, text=True).stdout
        d = base / "dists" / suite / "main" / f"binary-{ARCH}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "Packages").write_text(text)
        (d / "Packages.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
        files = []
        for rel in (f"main/binary-{ARCH}/Packages", f"main/binary-{ARCH}/Packages.gz"):
            data = (base / "dists" / suite / rel).read_bytes()
            files.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {rel}")
        (base / "dists" / suite / "Release").write_text(
            f"Origin: test\nLabel: test\nSuite: {suite}\nCodename: {suite}\n"
            f"Date: Tue, 14 Nov 2023 22:13:20 UTC\nArchitectures: {ARCH}\nComponents: main\n"
            "SHA256:\n" + "\n".join(files) + "\n")
        if self.gnupghome is not None:
            rel = base / "dists" / suite
            subprocess.run(["gpg", "--batch", "--yes", "--homedir", str(self.gnupghome), "--clearsign",
                            "-o", str(rel / "InRelease"), str(rel / "Release")], check=True, capture_output=True)


def signing_key(home: Path, out: Path) -> Path:
    """A new OpenPGP signing key in GNUPGHOME `home`; its public key exported to `out`."""
    require_tools("gpg")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    subprocess.run(["gpg", "--batch", "--homedir", str(home), "--passphrase", "", "--quick-gen-key",
                    "lxclayer test archive <test@example.org>", "ed25519", "sign", "never"],
                   check=True, capture_output=True)
    out.write_bytes(subprocess.run(["gpg", "--batch", "--homedir", str(home), "--export"], check=True,
                                   capture_output=True).stdout)
    return out


class Server:
    """A plain file server for `root` on 127.0.0.1, port chosen by the kernel."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.paths: list[str] = []  # every path asked for

        server = self

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):
                server.paths.append(self.path)
                super().do_GET()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()
