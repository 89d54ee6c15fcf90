"""`kind = "files"`: copy the tree beside layer.toml into the root file system.

No root needed and, unless owners are given by name, no dependence on the layers below: the
layer is a pure function of its folder and definition, and is shared by every stack using it.
"""

import re
from functools import cache
from pathlib import PurePosixPath

from ..definitions import container_path, parse_mode, rel
from ..errors import BuildError, DefinitionError
from ..kinds.files import NAME_RE, Rule, Settings, is_id, root_dir, validate  # noqa: F401 (what the engine asks a builder for)
from ..manifest import Entry, sorted_entries
from ..realise.context import Context, Result
from ..sources import read_source, scan_sources

KIND = "files"


@cache
def glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _root_prefix(s: Settings) -> str:
    """The root folder as a prefix of source paths: "./root/" and "root" are both "root/"."""
    parts = PurePosixPath(s.root).parts
    return "/".join(parts) + "/" if parts else ""


def _names(s: Settings) -> tuple[set[str], set[str]]:
    users = {r.owner for r in s.modes if isinstance(r.owner, str) and not is_id(r.owner)}
    groups = {r.group for r in s.modes if isinstance(r.group, str) and not is_id(r.group)}
    return users, groups  # type: ignore[return-value]


def resolved_inputs(ctx: Context) -> dict[str, str]:
    """Owner and group names resolved to ids against /etc/passwd and /etc/group below."""
    s: Settings = ctx.layer.spec  # type: ignore[assignment]
    users, groups = _names(s)
    if not users and not groups:
        return {}
    out: dict[str, str] = {}
    for table, names, col in (("etc/passwd", users, "user"), ("etc/group", groups, "group")):
        if not names:
            continue
        e = ctx.lower_file(table)
        ids = {}
        if e is not None and e.type == "file":
            for line in ctx.store.read_blob(e.hash).decode("utf-8", "replace").splitlines():
                fields = line.split(":")
                if len(fields) >= 3 and is_id(fields[2]):
                    ids[fields[0]] = fields[2]
        for name in sorted(names):
            if name not in ids:
                raise BuildError(
                    f"{col} {name!r} does not exist in /{table} of the layers below",
                    file=rel(ctx.layer.file, ctx.project.root), key="modes",
                )
            out[f"{col}:{name}"] = ids[name]
    return out


def _id(value: str | int | None, kind: str, resolved: dict[str, str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if is_id(value):
        return int(value)
    return int(resolved[f"{kind}:{value}"])


def realise(ctx: Context) -> Result:
    layer = ctx.layer
    s: Settings = layer.spec  # type: ignore[assignment]
    shown = rel(layer.file, ctx.project.root)
    resolved = resolved_inputs(ctx)
    mtime = ctx.source_date_epoch
    rules = [
        (
            glob_regex(container_path(r.path, file=shown, key="modes")),
            parse_mode(r.mode, file=shown, key="modes") if r.mode is not None else None,
            _id(r.owner, "user", resolved),
            _id(r.group, "group", resolved),
        )
        for r in s.modes
    ]

    def attrs(path: str, default_mode: int) -> tuple[int, int, int, bool]:
        mode, uid, gid, matched = default_mode, 0, 0, False
        for rx, m, u, g in rules:
            if rx.match(path):
                matched = True
                mode = m if m is not None else mode
                uid = u if u is not None else uid
                gid = g if g is not None else gid
        return mode, uid, gid, matched

    entries: dict[str, Entry] = {}

    def add_parents(path: str) -> None:
        parent = path.rpartition("/")[0]
        while parent and parent not in entries:
            mode, uid, gid, matched = attrs(parent, 0o755)
            entries[parent] = Entry(
                path=parent, type="dir", mode=mode, uid=uid, gid=gid, mtime=mtime, implicit=not matched
            )
            parent = parent.rpartition("/")[0]

    rootdir = root_dir(layer, shown)
    if rootdir is not None:
        # Exactly what the input digest covers (the layer folder's sources), nothing else.
        prefix = _root_prefix(s)
        sources = scan_sources(layer.dir, ctx.project.root)
        for relpath, src in sources.items():
            if not relpath.startswith(prefix):
                continue
            path = relpath[len(prefix):]
            if src.dir:
                mode, uid, gid, matched = attrs(path, 0o755)
                e = Entry(path=path, type="dir", mode=mode, uid=uid, gid=gid, mtime=mtime, implicit=not matched)
            elif src.target:
                e = Entry(path=path, type="symlink", mode=0o777, mtime=mtime, target=src.target)
            else:
                data = read_source(layer.dir / relpath)
                mode, uid, gid, _ = attrs(path, 0o755 if src.executable else 0o644)
                h = ctx.store.put_blob(data)
                e = Entry(path=path, type="file", mode=mode, uid=uid, gid=gid, mtime=mtime,
                          size=len(data), hash=h)
            entries[path] = e
            add_parents(path)
    for link, target in s.symlinks.items():
        path = container_path(link, file=shown, key=f"symlinks.{link}")
        entries[path] = Entry(path=path, type="symlink", mode=0o777, mtime=mtime, target=target)
        add_parents(path)
    for i, d in enumerate(s.delete):
        path = container_path(d, file=shown, key=f"delete[{i}]")
        if path in entries:
            raise DefinitionError(
                f"{path!r} is both added and deleted by this layer", file=shown, key=f"delete[{i}]"
            )
        entries[path] = Entry(path=path, type="whiteout")
    return Result(entries=sorted_entries(entries.values()))
