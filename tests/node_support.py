"""A Proxmox VE 9 node's skopeo, for the signature tests.

PVE 9 is Debian 13 (trixie); its `oci-registry-pull` runs trixie's skopeo (1.18). Debian 12's
skopeo 1.9.3 cannot check sigstore signatures at all (a Debian patch: "Source image rejected:
Debian-local change: sigstore disabled"), so the tests run trixie's own skopeo in a trixie
root file system made with mmdebstrap (about 40 s, once per session), chrooted: the network
namespace is the host's, so the registry on 127.0.0.1 is reachable as from the node itself.

`LXCLAYER_TEST_NODE_ROOT=DIR` reuses such a root (made by this module before) instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from .e2e_support import require_root, require_tools

NODE_SUITE = "trixie"


class Node:
    def __init__(self, root: Path):
        self.root = root

    def workdir(self) -> tuple[Path, str]:
        """A fresh folder inside the node: (host path, path as the node sees it)."""
        name = f"node-test-{uuid.uuid4().hex[:12]}"
        host = self.root / "tmp" / name
        host.mkdir(parents=True)
        return host, f"/tmp/{name}"

    def trust(self, registry: str, repo: str, pub: Path) -> tuple[Path, str]:
        """/etc/containers/policy.json and registries.d as docs/deploy-proxmox.md tells a node to
        write them (here in a folder of their own): only images of REGISTRY/REPO signed by `pub`."""
        host, inside = self.workdir()
        shutil.copy(pub, host / "release.pub")
        (host / "policy.json").write_text(json.dumps({
            "default": [{"type": "reject"}],
            "transports": {"docker": {f"{registry}/{repo}": [
                {"type": "sigstoreSigned", "keyPath": f"{inside}/release.pub",
                 "signedIdentity": {"type": "matchRepository"}}]}},
        }, indent=2))
        (host / "registries.d").mkdir()
        (host / "registries.d" / "lxclayer.yaml").write_text(
            f"docker:\n  {registry}:\n    use-sigstore-attachments: true\n")
        return host, inside

    def pull(self, trust: tuple[Path, str], ref: str, creds: str, *, pve: bool = True
             ) -> tuple[subprocess.CompletedProcess, Path]:
        """`pve`: what PVE 9.1's oci-registry-pull runs (pve-storage, PVE/API2/Storage/Status.pm:
        `skopeo copy docker://REF:TAG oci-archive:FILE`). Else the pull docs/deploy-proxmox.md
        gives for signed images: the same with `--remove-signatures` (the policy is still
        checked; only the copying of the signatures into the archive, which oci-archive cannot
        hold, is left out). The TLS and credential options stand in for the node's registry
        configuration (here: plain HTTP on loopback with htpasswd)."""
        host, inside = trust
        out = host / "pulled.tar"
        out.unlink(missing_ok=True)
        r = subprocess.run(["chroot", str(self.root), "skopeo", "copy",
                            "--policy", f"{inside}/policy.json", "--registries.d", f"{inside}/registries.d",
                            "--src-tls-verify=false", "--src-creds", creds,
                            *([] if pve else ["--remove-signatures"]), f"docker://{ref}",
                            f"oci-archive:{inside}/pulled.tar"], capture_output=True, text=True, timeout=300)
        return r, out


def node_fixture():
    """A session-scoped pytest fixture: a trixie root with skopeo."""
    import pytest

    @pytest.fixture(scope="session")
    def pve_node(tmp_path_factory):
        require_root()
        require_tools("chroot")
        given = os.environ.get("LXCLAYER_TEST_NODE_ROOT")
        if given:
            yield Node(Path(given))
            return
        require_tools("mmdebstrap")
        root = tmp_path_factory.mktemp("pve-node") / "root"
        r = subprocess.run(["mmdebstrap", "--variant=essential", "--include=skopeo", "--mode=root",
                            NODE_SUITE, str(root), "http://deb.debian.org/debian"],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"mmdebstrap {NODE_SUITE} with skopeo failed:\n{r.stderr[-3000:]}")
        yield Node(root)
        shutil.rmtree(root, ignore_errors=True)

    return pve_node
