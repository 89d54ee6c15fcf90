"""`kind = "script"`: a shell script run with /bin/sh in a chroot of the layers below.

For what the other kinds cannot express (make a system user, generate a locale, ...). The
script runs as root with `set -e`, SOURCE_DATE_EPOCH exported, the layer folder mounted
read-only at /run/lxclayer/layer (also in $LXCLAYER_LAYER_DIR), no service allowed to start,
and by default no network: a script that downloads would make the layer depend on what a
server says that day. `network = true` allows it (the host's resolv.conf is bind-mounted over
the tree's for the run); the layer is then only as reproducible as what it downloads.

The layer is the difference the script made, normalised like every Debian layer.
"""


from ..debian.chroot import Bind, Chroot
from ..errors import BuildError
from ..kinds.script import Settings, validate  # noqa: F401 (what the engine asks a builder for)
from ..realise.context import Context, Result
from ..realise.program import build_in_chroot, require_root, require_tool, shown

KIND = "script"

LAYER_INSIDE = "/run/lxclayer/layer"


def realise(ctx: Context) -> Result:
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    require_root(ctx, "it runs the script in a chroot")
    require_tool(ctx, "unshare", "util-linux")
    script = f"{LAYER_INSIDE}/{s.script}"

    def work(ch: Chroot) -> None:
        if not (ch.root / "bin/sh").exists() and not (ch.root / "bin/sh").is_symlink():
            raise BuildError("the layers below have no /bin/sh", file=shown(ctx))
        env = {**s.env, "LXCLAYER_LAYER_DIR": LAYER_INSIDE, "LXCLAYER_LAYER": ctx.layer.name}
        ctx.log(f"running {s.script}")
        out = ch.run(["/bin/sh", "-e", script], network=s.network, env=env, what="script")
        if out.returncode != 0:
            last = next((ln for ln in reversed(out.tail) if ln.strip()), "")
            raise BuildError(f"{s.script} failed with exit code {out.returncode}" + (f": {last.strip()}" if last else ""),
                             file=shown(ctx), key="script")

    entries = build_in_chroot(ctx, work, binds=[Bind(ctx.layer.dir, LAYER_INSIDE)])
    return Result(entries=entries)
