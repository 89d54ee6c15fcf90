"""Layer and template definitions: decoding, validation and the stack order.

A project is a folder holding `layers/template.toml` (the template) and one folder per layer
with a `layer.toml` and the files beside it. Every definition is decoded with msgspec into typed
structs; every problem becomes a :class:`~lxclayer.errors.DefinitionError` naming the file, the
key and the reason.

The settings of each layer kind, and their validation, are declared by its module in
:mod:`lxclayer.kinds`; this module imports no builder.
"""

import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from . import kinds as kindmods
from . import settings
from .boottest.spec import Check, Fault
from .errors import DefinitionError, msgspec_key
from .formats import FORMATS
from .fsio import read_regular
from .kinds.base import LAYER_FILE, MODE_RE, Layer, LayerSpec, container_path, parse_mode, rel  # noqa: F401 (re-exported)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+_-]*$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~]*$")

TEMPLATE_FILE = "template.toml"  # a project with one template: layers/template.toml
TEMPLATES_DIR = "templates"      # a project with several: templates/*.toml, layers shared in layers/
VAR_RE = re.compile(r"\{\{\s*([A-Za-z0-9_-]*)\s*\}\}")
VAR_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

class Template(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    version: str
    release: int = 1
    arch: str = "amd64"
    formats: list[str] = msgspec.field(default_factory=lambda: ["tar.gz"])
    source_date_epoch: int
    layers: list[str]
    checks: list[Check] = []
    faults: list[Fault] = []
    # Values the shared layers take from the template: `{{name}}` in any string of a
    # layer.toml (a package name, a suite, a path) is replaced by vars[name]; part of the
    # layer's settings, hence of its input digest.
    vars: dict[str, str] = {}

    @property
    def basename(self) -> str:
        return f"{self.name}_{self.version}-{self.release}_{self.arch}"


@dataclass(frozen=True)
class Project:
    root: Path
    template_file: Path
    template: Template
    layers: tuple[Layer, ...]  # in stack order, bottom first
    layers_dir: Path
    templates: tuple[str, ...] = ()  # every template of the project, by name (this one included)

    @property
    def lock_file(self) -> Path:
        return self.root / "locks" / f"{self.template.name}.lock"

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def below(self, name: str) -> tuple[Layer, ...]:
        """The layers under `name` in the stack, bottom first."""
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return self.layers[:i]
        raise KeyError(name)


# --- helpers shared with the builders -------------------------------------------------------


def read_toml(file: Path, root: Path | None = None) -> dict[str, Any]:
    shown = rel(file, root)
    try:
        data = read_regular(file)
    except FileNotFoundError:
        raise DefinitionError("file not found", file=shown) from None
    except OSError as e:
        raise DefinitionError(f"cannot read: {e.strerror}", file=shown) from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise DefinitionError("not UTF-8 text", file=shown) from None
    except tomllib.TOMLDecodeError as e:
        raise DefinitionError(f"invalid TOML: {e}", file=shown) from None


def decode(data: dict[str, Any], typ: Any, file: str) -> Any:
    try:
        return msgspec.convert(data, typ)
    except msgspec.ValidationError as e:
        key, reason = msgspec_key(e)
        if key is not None and "[...]" in key:
            key = _table_key(data, typ, key)
        raise DefinitionError(reason, file=file, key=key) from None


_SEGMENT = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\.\.\.)\]")


def _table_key(data: Any, typ: Any, key: str) -> str:
    """msgspec says `symlinks[...]` for a bad value in a table; find the key it means by
    walking the data and the type along the path (`symlinks."etc/x"`)."""
    out = ""
    pos = 0
    while pos < len(key):
        m = _SEGMENT.match(key, pos)
        if m is None:
            return out + key[pos:]
        pos = m.end()
        name, index = m.group(1), m.group(2)
        if name is not None:
            fields = {f.encode_name: f.type for f in msgspec.structs.fields(typ)} if _is_struct(typ) else {}
            if not isinstance(data, dict) or name not in fields:
                return out + key[m.start():]
            out += f".{name}" if out else name
            data, typ = data[name], fields[name]
        elif index != "...":
            args = typing.get_args(typ)
            if not isinstance(data, list) or not args:
                return out + key[m.start():]
            out += f"[{index}]"
            data, typ = data[int(index)], args[0]
        else:
            args = typing.get_args(typ)
            if not isinstance(data, dict) or len(args) != 2:
                return out + key[m.start():]
            bad = next((k for k, v in data.items() if not _converts(v, args[1])), None)
            if bad is None:
                return out + key[m.start():]
            out += f'."{bad}"' if out else f'"{bad}"'
            data, typ = data[bad], args[1]
    return out


def _is_struct(typ: Any) -> bool:
    return isinstance(typ, type) and issubclass(typ, msgspec.Struct)


def _converts(value: Any, typ: Any) -> bool:
    try:
        msgspec.convert(value, typ)
        return True
    except msgspec.ValidationError:
        return False


# --- loading ---------------------------------------------------------------------------------


def find_project(start: Path | None = None) -> Path:
    """The project root: the nearest folder at or above `start` holding templates/*.toml or
    layers/template.toml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "layers" / TEMPLATE_FILE).is_file() or any((folder / TEMPLATES_DIR).glob("*.toml")):
            return folder
    raise DefinitionError(
        "no templates/*.toml or layers/template.toml here or in any parent folder (use --project DIR)",
        file=str(here),
    )


def template_files(root: Path) -> dict[str, Path]:
    """Every template of the project by name: templates/*.toml, or the one layers/template.toml.
    Two with the same name are refused, naming both files."""
    folder = root / TEMPLATES_DIR
    files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    if not files:
        files = [root / "layers" / TEMPLATE_FILE]
    found: dict[str, Path] = {}
    for f in files:
        shown = rel(f, root)
        data = read_toml(f, root)
        name = data.get("name")
        if not isinstance(name, str):
            raise DefinitionError("required key is missing (a string)", file=shown, key="name")
        if name in found:
            raise DefinitionError(f"template {name!r} is also defined in {rel(found[name], root)}",
                                  file=shown, key="name")
        found[name] = f
    return found


def select_template(root: Path, wanted: str | None) -> tuple[Path, tuple[str, ...]]:
    """The file of the template `wanted` (a name), or of the project's default; and every
    template's name."""
    files = template_files(root)
    names = tuple(files)
    if wanted is None:
        wanted = settings.load(root).project.default_template or None
        if wanted is None:
            if len(files) > 1:
                raise DefinitionError(
                    f"the project has several templates ({', '.join(names)}): name the default in "
                    "[project] default-template, or pass --template NAME", file=settings.SETTINGS_FILE)
            wanted = names[0]
        elif wanted not in files:
            raise DefinitionError(f"no template named {wanted!r} (the project has: {', '.join(names)})",
                                  file=settings.SETTINGS_FILE, key="project.default-template")
    if wanted not in files:
        raise DefinitionError(f"no template named {wanted!r} (the project has: {', '.join(names)})")
    return files[wanted], names


def load_template(file: Path, root: Path) -> Template:
    shown = rel(file, root)
    data = read_toml(file, root)
    tpl: Template = decode(data, Template, shown)
    if not NAME_RE.match(tpl.name):
        raise DefinitionError(
            f"{tpl.name!r} is not a valid name (lower-case letters, digits, '.', '+', '_', '-')",
            file=shown, key="name",
        )
    if not VERSION_RE.match(tpl.version) or "_" in tpl.version:
        raise DefinitionError(f"{tpl.version!r} is not a valid version", file=shown, key="version")
    if tpl.release < 1:
        raise DefinitionError("must be 1 or more", file=shown, key="release")
    if not NAME_RE.match(tpl.arch):
        raise DefinitionError(f"{tpl.arch!r} is not a valid architecture", file=shown, key="arch")
    if not tpl.formats:
        raise DefinitionError("at least one format is needed", file=shown, key="formats")
    for i, fmt in enumerate(tpl.formats):
        if fmt not in FORMATS:
            raise DefinitionError(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})",
                                  file=shown, key=f"formats[{i}]")
    if tpl.source_date_epoch < 0 or tpl.source_date_epoch > 2**33:
        raise DefinitionError("must be a Unix time in seconds", file=shown, key="source_date_epoch")
    if not tpl.layers:
        raise DefinitionError("the template has no layers", file=shown, key="layers")
    seen: set[str] = set()
    for i, name in enumerate(tpl.layers):
        if name in seen:
            raise DefinitionError(
                f"layer {name!r} is listed twice", file=shown, key=f"layers[{i}]"
            )
        seen.add(name)
    return tpl


def substitute(data: Any, values: dict[str, str], *, file: str, template: str, path: str = "") -> Any:
    """`data` (decoded TOML) with every `{{name}}` in its strings and keys replaced by the
    template's vars; a name the template does not set is refused, naming the key."""
    def one(text: str, where: str) -> str:
        def repl(m: re.Match[str]) -> str:
            var = m.group(1)
            if var not in values:
                raise DefinitionError(
                    f"uses {{{{{var}}}}}, which template {template!r} does not set in [vars]",
                    file=file, key=where or None)
            return values[var]
        return VAR_RE.sub(repl, text) if "{{" in text else text

    if isinstance(data, str):
        return one(data, path)
    if isinstance(data, list):
        return [substitute(v, values, file=file, template=template, path=f"{path}[{i}]") for i, v in enumerate(data)]
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            where = f"{path}.{k}" if path else k
            out[one(k, where)] = substitute(v, values, file=file, template=template, path=where)
        return out
    return data


def load_layer(name: str, layers_dir: Path, root: Path, *, listed_in: str, key: str,
               template: Template | None = None) -> Layer:

    folder = layers_dir / name
    if not NAME_RE.match(name):
        raise DefinitionError(f"{name!r} is not a valid layer name", file=listed_in, key=key)
    file = folder / LAYER_FILE
    if not file.is_file():
        raise DefinitionError(
            f"layer {name!r} has no {rel(file, root)}", file=listed_in, key=key
        )
    shown = rel(file, root)
    data = read_toml(file, root)
    data = substitute(data, template.vars if template else {}, file=shown,
                      template=template.name if template else "")
    kind = data.get("kind")
    kinds = kindmods.names()
    if kind is None:
        raise DefinitionError(
            f"required key is missing (one of: {', '.join(sorted(kinds))})", file=shown, key="kind"
        )
    if not isinstance(kind, str):
        raise DefinitionError(
            f"must be a string, one of: {', '.join(sorted(kinds))} (got {type(kind).__name__})",
            file=shown, key="kind",
        )
    if kind not in kinds:
        raise DefinitionError(
            f"unknown layer kind {kind!r} (known: {', '.join(sorted(kinds))})",
            file=shown, key="kind",
        )
    module = kindmods.kind(kind)
    spec = decode(data, module.Settings, shown)
    for i, req in enumerate(spec.requires):
        if not NAME_RE.match(req):
            raise DefinitionError(f"{req!r} is not a valid layer name", file=shown, key=f"requires[{i}]")
    layer = Layer(name=name, dir=folder, file=file, spec=spec)
    module.validate(layer, shown)
    return layer


def stack_order(tpl: Template, layers: dict[str, Layer], template_file: str, root: Path) -> list[Layer]:
    """Order the layers so that each stands above what it requires.

    Stable: among the layers whose requirements are met, the one listed first in the template
    comes first. A requirement that is not in the template, or a cycle, is an error."""
    for name in tpl.layers:
        layer = layers[name]
        for i, req in enumerate(layer.spec.requires):
            if req not in layers:
                raise DefinitionError(
                    f"requires layer {req!r}, which the template does not list"
                    f" ({template_file}: layers)",
                    file=rel(layer.file, root), key=f"requires[{i}]",
                )
            if req == name:
                raise DefinitionError("a layer cannot require itself", file=rel(layer.file, root), key=f"requires[{i}]")
    placed: list[Layer] = []
    done: set[str] = set()
    pending = list(tpl.layers)
    while pending:
        for name in pending:
            if all(r in done for r in layers[name].spec.requires):
                placed.append(layers[name])
                done.add(name)
                pending.remove(name)
                break
        else:
            cycle = _find_cycle(pending, layers)
            raise DefinitionError(
                "the layers require each other in a cycle: " + " -> ".join(cycle),
                file=rel(layers[cycle[0]].file, root), key="requires",
            )
    return placed


def _find_cycle(names: list[str], layers: dict[str, Layer]) -> list[str]:
    pending = set(names)
    start = names[0]
    path = [start]
    while True:
        nxt = next(r for r in layers[path[-1]].spec.requires if r in pending)
        if nxt in path:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)


def load_project(root: Path | None = None, template_file: Path | None = None, *,
                 template: str | None = None) -> Project:
    """Load and validate a whole project: one template (`template` by name, `template_file`
    by path, else the project's default) and every layer it lists."""
    names: tuple[str, ...] = ()
    if template_file is not None:
        template_file = template_file.resolve()
        root = (root or template_file.parent.parent).resolve()
    else:
        root = (root.resolve() if root else find_project())
        template_file, names = select_template(root, template)
    tpl = load_template(template_file, root)
    for var in tpl.vars:
        if not VAR_NAME_RE.match(var):
            raise DefinitionError(f"{var!r} is not a valid var name (lower-case letters, digits, '_')",
                                  file=rel(template_file, root), key=f"vars.{var}")
    shown = rel(template_file, root)
    layers_dir = root / "layers"
    layers: dict[str, Layer] = {}
    for i, name in enumerate(tpl.layers):
        layers[name] = load_layer(name, layers_dir, root, listed_in=shown, key=f"layers[{i}]", template=tpl)
    ordered = stack_order(tpl, layers, shown, root)
    return Project(root=root, template_file=template_file, template=tpl, layers=tuple(ordered),
                   layers_dir=layers_dir, templates=names or (tpl.name,))
