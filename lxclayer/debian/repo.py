"""A flat apt repository holding exactly the pinned .debs.

Installing from it (and from nothing else) makes a build install exactly the pinned versions and
need no network: every .deb in it was checked against its pinned sha256 when it entered the
store, and the pins came from signed archive indices, so the repository is marked trusted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import BuildError
from ..lock.model import Artifact
from .apt import deb_filename
from .deb822 import format_paragraph
from .debfile import DebError, control_fields
from .fetch import link_or_copy

# Fields of the .deb's control that apt needs in a Packages index (others are dropped).
KEEP = ("Package", "Source", "Version", "Architecture", "Essential", "Priority", "Section",
        "Installed-Size", "Maintainer", "Multi-Arch", "Pre-Depends", "Depends", "Recommends",
        "Suggests", "Enhances", "Breaks", "Conflicts", "Replaces", "Provides", "Protected",
        "Built-Using", "Description")


def make_repo(dest: Path, pins: dict[str, Artifact], paths: dict[str, Path], *, suite: str,
              date: str) -> None:
    """Write `dest/Packages`, `dest/Release` and the .debs (hard links into the store)."""
    dest.mkdir(parents=True, exist_ok=True)
    paras = []
    for name in sorted(pins):
        a = pins[name]
        fn = deb_filename(a)
        link_or_copy(paths[a.sha256], dest / fn)
        try:
            ctl = control_fields(dest / fn)
        except (DebError, OSError, UnicodeDecodeError) as e:
            raise BuildError(f"{fn} is not a readable .deb: {e}") from None
        if ctl.get("Package") != a.name or ctl.get("Version") != a.version:
            raise BuildError(f"{fn} holds {ctl.get('Package')} {ctl.get('Version')}, not {a.name} {a.version}")
        para = {k: ctl[k] for k in KEEP if k in ctl}
        para["Filename"] = f"./{fn}"
        para["Size"] = str(a.size or (dest / fn).stat().st_size)
        para["SHA256"] = a.sha256
        paras.append(para)
    packages = "\n".join(format_paragraph(p) for p in paras).encode()
    (dest / "Packages").write_bytes(packages)
    release = format_paragraph({
        "Origin": "lxclayer",
        "Label": "lxclayer pinned packages",
        "Suite": suite,
        "Codename": suite,
        "Date": date,
        "Architectures": " ".join(sorted({a.arch for a in pins.values()} - {"all"}) or ["all"]),
        "Components": "main",
        "SHA256": f"\n {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages",
    })
    (dest / "Release").write_text(release)
