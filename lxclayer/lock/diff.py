"""`lxclayer lock diff`: what changed between two lockfiles, one line per change.

In the spirit of `nix store diff-closures`::

    template: version 1.0.0 → 1.1.0
    tar.gz: size 201.3 MiB → 201.4 MiB (+96.0 KiB), sha256 0123456789ab… → 456789abcdef…
    postgresql: postgresql-15 15.13-0+deb12u1 → 15.14-0+deb12u1
    base-os: + libfoo 1.2-3
    redis-config: file root/etc/redis/redis.conf changed

Also the git side: reading a lockfile from a revision (`load_side`) and acting as a git external
diff driver (`git_external`).
"""

import difflib
import subprocess
from pathlib import Path

import msgspec

from ..errors import LockError
from . import toml
from .model import EMPTY_DIR, Artifact, LockedLayer, Lockfile

KINDS = ("template", "archive", "layer", "artifact", "source", "resolved", "digest")
SHORT = 12


class Change(msgspec.Struct):
    kind: str  # one of KINDS
    layer: str | None  # the layer it belongs to; None for the template and its archives
    name: str  # the field, format, artifact, file or digest that changed
    old: str | None  # None: added
    new: str | None  # None: removed
    detail: str = ""  # what a person reads besides old → new


# --- computing ------------------------------------------------------------------------------


def diff(old: Lockfile | None, new: Lockfile | None) -> list[Change]:
    """Every change from `old` to `new`: template, archives, then the layers in stack order."""
    out: list[Change] = []
    if old is None and new is None:
        return out
    if old is None or new is None:
        lock = new or old
        assert lock is not None
        t = lock.template
        ident = f"{t.name} {t.version}-{t.release} ({t.arch})"
        out.append(Change(kind="template", layer=None, name="template",
                          old=None if new else ident, new=ident if new else None))
    else:
        out += _template(old, new)
        if old.template.name != new.template.name:
            # two templates compared: say first what they share (the same store entries)
            same = [n for n, la in new.layers.items()
                    if n in old.layers and old.layers[n].input == la.input]
            alike = [n for n, la in new.layers.items()
                     if n in old.layers and n not in same and old.layers[n].output == la.output]
            parts = [f"{', '.join(same)} (same output)" if same else "no layer"]
            if alike:
                parts.append(f"{', '.join(alike)} (same files, other inputs)")
            out.append(Change(kind="template", layer=None, name="shared", old=None, new=None,
                              detail="; ".join(parts)))
    out += _archives(old, new)
    old_layers = old.layers if old else {}
    new_layers = new.layers if new else {}
    for name in _stack_union(list(old_layers), list(new_layers)):
        out += _layer(name, old_layers.get(name), new_layers.get(name))
    return out


def _stack_union(old: list[str], new: list[str]) -> list[str]:
    """The new stack order, with removed layers placed after their old neighbour below."""
    order = list(new)
    present = set(new)
    for i, name in enumerate(old):
        if name in present:
            continue
        below = next((o for o in reversed(old[:i]) if o in present), None)
        order.insert(order.index(below) + 1 if below is not None else 0, name)
        present.add(name)
    return order


def _template(old: Lockfile, new: Lockfile) -> list[Change]:
    out: list[Change] = []
    a, b = old.template, new.template
    for field in ("name", "version", "release", "arch", "source_date_epoch"):
        x, y = str(getattr(a, field)), str(getattr(b, field))
        if x != y:
            out.append(Change(kind="template", layer=None, name=field, old=x, new=y))
    if list(old.layers) != list(new.layers) and set(old.layers) == set(new.layers):
        out.append(Change(kind="template", layer=None, name="layers",
                          old=", ".join(old.layers), new=", ".join(new.layers),
                          detail="stack order"))
    for fmt in sorted(set(a.compressor) | set(b.compressor)):
        x, y = a.compressor.get(fmt), b.compressor.get(fmt)
        if x != y:
            out.append(Change(kind="template", layer=None, name=f"compressor {fmt}", old=x, new=y))
    if a.definition != b.definition:
        out.append(Change(kind="digest", layer=None, name="definition", old=a.definition,
                          new=b.definition))
    return out


def _archives(old: Lockfile | None, new: Lockfile | None) -> list[Change]:
    out: list[Change] = []
    a = old.template.archives if old else {}
    b = new.template.archives if new else {}
    for fmt in sorted(set(a) | set(b)):
        x, y = a.get(fmt), b.get(fmt)
        if x == y:
            continue
        if x is None or y is None:
            it = x or y
            assert it is not None
            sign = "+" if x is None else "-"
            image = f", image {it.image}" if it.image else ""
            detail = f"{sign} {it.file} ({size_text(it.size)}, sha256 {short(it.sha256)}{image})"
        else:
            parts = []
            if x.file != y.file:
                parts.append(f"file {x.file} → {y.file}")
            if x.size != y.size:
                parts.append(f"size {size_text(x.size)} → {size_text(y.size)} "
                             f"({size_text(y.size - x.size, signed=True)})")
            if x.sha256 != y.sha256:
                parts.append(f"sha256 {short(x.sha256)} → {short(y.sha256)}")
            if x.image != y.image:
                parts.append(f"image {x.image or '-'} → {y.image or '-'}")
            detail = ", ".join(parts)
        out.append(Change(kind="archive", layer=None, name=fmt,
                          old=x.sha256 if x else None, new=y.sha256 if y else None,
                          detail=detail))
    return out


def _layer(name: str, a: LockedLayer | None, b: LockedLayer | None) -> list[Change]:
    out: list[Change] = []
    if a is None or b is None:
        it = b or a
        assert it is not None
        n_src, n_art = len(it.sources), sum(len(g) for g in it.artifacts.values())
        out.append(Change(kind="layer", layer=name, name=name,
                          old=None if a is None else a.output, new=None if b is None else b.output,
                          detail=f"{it.kind}, {_count(n_src, 'source file')}, "
                                 f"{_count(n_art, 'artifact')}"))
        out += _artifacts(name, a.artifacts if a else {}, b.artifacts if b else {})
        return out
    for field in ("kind", "builder", "parents"):
        x, y = str(getattr(a, field)).lower(), str(getattr(b, field)).lower()
        if x != y:
            out.append(Change(kind="layer", layer=name, name=field, old=x, new=y))
    for path in sorted(set(a.sources) | set(b.sources)):
        x, y = a.sources.get(path), b.sources.get(path)
        if x != y:
            out.append(Change(kind="source", layer=name, name=path, old=x, new=y,
                              detail=_mode_detail(x, y)))
    for k in sorted(set(a.resolved) | set(b.resolved)):
        x, y = a.resolved.get(k), b.resolved.get(k)
        if x != y:
            out.append(Change(kind="resolved", layer=name, name=k, old=x, new=y))
    out += _artifacts(name, a.artifacts, b.artifacts)
    for field in ("settings", "input", "output"):
        x, y = getattr(a, field), getattr(b, field)
        if x != y:
            out.append(Change(kind="digest", layer=name, name=field, old=x, new=y))
    return out


def _source_kind(value: str | None) -> str:
    return "folder" if value == EMPTY_DIR else "file"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _mode_detail(x: str | None, y: str | None) -> str:
    if x is None or y is None:
        return ""
    xh, _, xm = x.partition(" ")
    yh, _, ym = y.partition(" ")
    if xh == yh and xm != ym:
        return "now executable" if ym == "x" else "no longer executable"
    return ""


def _artifacts(layer: str, a: dict[str, dict[str, Artifact]],
               b: dict[str, dict[str, Artifact]]) -> list[Change]:
    # Artifacts are compared by name across their kinds ("packages", "wheels", ...).
    flat_a = {n: art for group in a.values() for n, art in group.items()}
    flat_b = {n: art for group in b.values() for n, art in group.items()}
    out: list[Change] = []
    # A Debian package moved to another version is reported per source package, with the
    # pocket when the new .deb is the security archive's: the review reads like an advisory.
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for n in sorted(set(flat_a) & set(flat_b)):
        x, y = flat_a[n], flat_b[n]
        if x.version != y.version and _pool_source(x) and _pool_source(y) == _pool_source(x):
            grouped.setdefault((_pool_source(y), x.version, y.version), []).append(n)
    in_group = {n for names in grouped.values() for n in names}
    for (src, old_v, new_v), names in sorted(grouped.items()):
        parts = ["security"] if all(flat_b[n].source.startswith(SECURITY_POOL) for n in names) else []
        if names != [src]:
            parts.append(", ".join(names))
        out.append(Change(kind="artifact", layer=layer, name=src, old=old_v, new=new_v,
                          detail=": ".join(parts) if len(parts) == 2 else "".join(parts)))
    for n in sorted(set(flat_a) | set(flat_b)):
        x, y = flat_a.get(n), flat_b.get(n)
        if x == y or n in in_group:
            continue
        if x is None or y is None:
            out.append(Change(kind="artifact", layer=layer, name=n,
                              old=_label(x) if x else None, new=_label(y) if y else None))
            continue
        parts = []
        if x.arch != y.arch:
            parts.append(f"arch {x.arch or '-'} → {y.arch or '-'}")
        if x.version == y.version and x.sha256 != y.sha256:
            parts.append(f"sha256 {short(x.sha256)} → {short(y.sha256)}")
        if x.source != y.source and x.version == y.version:
            parts.append("source changed")
        out.append(Change(kind="artifact", layer=layer, name=n, old=_label(x), new=_label(y),
                          detail=", ".join(parts)))
    return out


SECURITY_POOL = "pool/updates/"  # where Debian's security archive keeps its .debs


def _pool_source(a: Artifact) -> str:
    """The source package of a .deb from its pool path (`pool/main/o/openssl/…` -> openssl)."""
    parts = a.source.split("/")
    return parts[-2] if len(parts) >= 4 and parts[0] == "pool" and a.source.endswith(".deb") else ""


def _label(a: Artifact) -> str:
    return a.version or short(a.sha256)


# --- rendering --------------------------------------------------------------------------------


def short(digest: str | None) -> str:
    if not digest:
        return "-"
    return digest[:SHORT] + "…" if len(digest) > SHORT else digest


def size_text(n: int, *, signed: bool = False) -> str:
    """Bytes for a person: `512 B`, `201.3 MiB`; `+96.0 KiB` with signed=True."""
    sign = ("+" if n >= 0 else "-") if signed else ("-" if n < 0 else "")
    if abs(n) < 1024:
        return f"{sign}{abs(n)} B"
    value = abs(n) / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{sign}{value:.1f} {unit}"
        value /= 1024
    return f"{sign}{value:.1f} TiB"


def where(c: Change) -> str:
    if c.layer is not None:
        return c.layer
    return c.name if c.kind == "archive" else "template"


def body(c: Change) -> str:
    """What changed, without the place: the part after `where: `."""
    arrow = f"{c.old} → {c.new}"
    if c.kind == "archive":
        return c.detail
    if c.kind == "template":
        if c.name == "shared":
            return f"shared: {c.detail}"
        if c.name == "template":
            return f"+ {c.new}" if c.old is None else f"- {c.old}"
        if c.old is None or c.new is None:
            return f"{c.name} + {c.new}" if c.old is None else f"{c.name} - {c.old}"
        return f"{c.name} {arrow}" + (f" ({c.detail})" if c.detail else "")
    if c.kind == "layer":
        if c.name == c.layer and (c.old is None or c.new is None):
            return (f"layer added ({c.detail}, output {short(c.new)})" if c.old is None
                    else f"layer removed ({c.detail})")
        return f"{c.name} {arrow}"
    if c.kind == "artifact":
        if c.old is None:
            return f"+ {c.name} {c.new}"
        if c.new is None:
            return f"- {c.name} {c.old}"
        if c.old == c.new:
            return f"{c.name} {c.old}: {c.detail}"
        return f"{c.name} {arrow}" + (f" ({c.detail})" if c.detail else "")
    if c.kind == "source":
        if c.old is None:
            return f"+ {_source_kind(c.new)} {c.name}"
        if c.new is None:
            return f"- {_source_kind(c.old)} {c.name}"
        return f"file {c.name} changed" + (f" ({c.detail})" if c.detail else "")
    if c.kind == "resolved":
        if c.old is None:
            return f"+ {c.name} = {c.new}"
        if c.new is None:
            return f"- {c.name} = {c.old}"
        return f"{c.name} {arrow}"
    if c.kind == "digest":
        return f"{c.name} {short(c.old)} → {short(c.new)}"
    return f"{c.kind} {c.name} {arrow}"  # pragma: no cover - every kind is handled above


def render(changes: list[Change], fmt: str) -> str:
    """The changes as "text" (one line each), "markdown" (a table) or "json"."""
    if fmt == "json":
        return msgspec.json.format(msgspec.json.encode(changes), indent=2).decode() + "\n"
    if fmt == "text":
        if not changes:
            return "no changes\n"
        return "".join(f"{where(c)}: {body(c)}\n" for c in changes)
    if fmt == "markdown":
        if not changes:
            return "No changes to the lockfile.\n"
        rows = ["| Where | Change |", "| --- | --- |"]
        rows += [f"| {md(where(c))} | {md(body(c))} |" for c in changes]
        return "\n".join(rows) + "\n"
    raise ValueError(f"unknown format {fmt!r}: text, markdown or json")


_MD_SPECIAL = set("\\`*_~|<>[]#")


def md(s: str) -> str:
    """Text for a markdown table cell: nothing in it is taken for markup."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in s).replace("\n", " ")


# --- git --------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    except FileNotFoundError:
        raise LockError("git is not installed", file=str(repo)) from None


def load_side(spec: str | None, repo: Path, path: Path) -> Lockfile | None:
    """One side of `lock diff`.

    `spec` None -> the working-tree file at `path` (relative to `repo` unless absolute); an
    existing file -> that file; `REV:FILE` -> that blob (FILE relative to the repository's top);
    anything else -> `path` as of the git revision `spec`. A lockfile that does not exist on
    that side is None (it was added or removed); so is HEAD in a repository without commits.
    """
    path = path if path.is_absolute() else Path(repo) / path
    if spec is None:
        return toml.read(path)
    if Path(spec).is_file():
        return toml.read(Path(spec))
    if ":" in spec:
        rev, _, rel = spec.partition(":")
        return _from_git(repo, rev, rel, spec)
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise LockError(f"{spec!r} is neither a file nor a git revision (no git repository "
                        "here)", file=str(repo))
    root = Path(top.stdout.decode().strip())
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise LockError(f"the lockfile is outside the git repository {root}",
                        file=str(path)) from None
    return _from_git(repo, spec, rel, f"{spec}:{rel}")


def _from_git(repo: Path, rev: str, rel: str, label: str) -> Lockfile | None:
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if commit.returncode != 0:
        if rev == "HEAD" and _git(repo, "rev-parse", "--git-dir").returncode == 0:
            return None  # a repository without commits: no lock there yet
        raise LockError(f"{rev!r} is neither a file nor a git revision", file=label)
    blob = _git(repo, "cat-file", "blob", f"{commit.stdout.decode().strip()}:{rel}")
    if blob.returncode != 0:
        return None  # not in that revision
    try:
        text = blob.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise LockError("not UTF-8 text", file=label) from None
    return toml.loads(text, file=label)


def git_external(argv: list[str]) -> str:
    """Be git's external diff command (`diff.lxclayer-lock.command`).

    git passes: path old-file old-hex old-mode new-file new-hex new-mode (and, for a rename,
    new-path and a message); a lone path for an unmerged file.
    """
    if len(argv) < 7:
        return f"{argv[0] if argv else '?'}: unmerged, no lock diff\n"
    path, old_file, _, _, new_file = argv[:5]
    shown = argv[7] if len(argv) >= 8 else path
    try:
        old = _read_side(old_file, f"a/{path}")
        new = _read_side(new_file, f"b/{shown}")
    except LockError as e:  # a broken lock (say, merge markers): show the plain diff
        return f"lxclayer lock diff {shown}: {e}\n" + _unified(old_file, new_file, path, shown)
    changes = diff(old, new)
    lines = render(changes, "text").splitlines()
    return f"lxclayer lock diff {shown}\n" + "".join(f"  {line}\n" for line in lines)


def _read_side(file: str, label: str) -> Lockfile | None:
    if file == "/dev/null":
        return None
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LockError(f"cannot read: {e}", file=label) from None
    return toml.loads(text, file=label)


def _unified(old_file: str, new_file: str, path: str, shown: str) -> str:
    def lines(f: str) -> list[str]:
        if f == "/dev/null":
            return []
        return Path(f).read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)

    return "".join(difflib.unified_diff(lines(old_file), lines(new_file), f"a/{path}",
                                        f"b/{shown}"))
