"""The project's own settings: `lxclayer.toml` at the project's root (optional).

```toml
[project]
default-template = "debian-13-stock-analysis"   # what `lxclayer build` builds without --template

[cache]
url = "oci://registry.example.com/team/lxclayer-cache"
mode = "pull"

[artifacts]
# Where a pinned .deb or wheel is fetched when its source no longer has it (docs/cache.md).
fallbacks = ["https://snapshot.debian.org/archive/debian/{timestamp}/{path}", "oci://registry.example.com/team/artifacts"]
```

Checked like a layer file: an unknown key or a wrong type is refused naming the file and key.
"""

from __future__ import annotations

import string
import tomllib
import urllib.parse
from pathlib import Path

import msgspec

from .errors import DefinitionError, msgspec_key

SETTINGS_FILE = "lxclayer.toml"
CACHE_MODES = ("pull", "push")
# What an [artifacts] fallback may name (rendered by lxclayer.artifacts), or an OCI registry.
FIELDS = ("sha256", "name", "path", "url", "timestamp")
OCI = "oci://"


class ProjectTable(msgspec.Struct, forbid_unknown_fields=True, rename="kebab"):
    default_template: str = ""


class CacheTable(msgspec.Struct, forbid_unknown_fields=True):
    url: str = ""
    mode: str = ""


class ArtifactsTable(msgspec.Struct, forbid_unknown_fields=True):
    # URL templates ({sha256}, {name}, {path}, {url}, {timestamp}) or oci://HOST[:PORT]/REPO,
    # tried in order when an artifact's own source does not have it (lxclayer.artifacts).
    fallbacks: list[str] = []


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    project: ProjectTable = msgspec.field(default_factory=ProjectTable)
    cache: CacheTable = msgspec.field(default_factory=CacheTable)
    artifacts: ArtifactsTable = msgspec.field(default_factory=ArtifactsTable)


def load(root: Path) -> Settings:
    """`<root>/lxclayer.toml`, or the defaults when there is none."""
    path = root / SETTINGS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Settings()
    except OSError as e:
        raise DefinitionError(f"cannot read: {e.strerror}", file=SETTINGS_FILE) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DefinitionError(f"not valid TOML ({e})", file=SETTINGS_FILE) from None
    try:
        s = msgspec.convert(data, Settings)
    except msgspec.ValidationError as e:
        key, why = msgspec_key(e)
        raise DefinitionError(why, file=SETTINGS_FILE, key=key) from None
    if s.cache.mode and s.cache.mode not in CACHE_MODES:
        raise DefinitionError(f"must be one of {', '.join(CACHE_MODES)}, not {s.cache.mode!r}",
                              file=SETTINGS_FILE, key="cache.mode")
    for i, f in enumerate(s.artifacts.fallbacks):
        why = check_fallback(f)
        if why:
            raise DefinitionError(why, file=SETTINGS_FILE, key=f"artifacts.fallbacks[{i}]")
    return s


def placeholders(template: str) -> list[str]:
    """The {placeholders} of a fallback URL template (ValueError: not a valid template)."""
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def check_fallback(text: str) -> str | None:
    """Why `text` is not a usable fallback, or None."""
    if text.startswith(OCI):
        from .registry import parse_reference

        try:
            parse_reference(text, what="artifacts registry")
        except Exception as e:  # noqa: BLE001 - the parser's message is the reason
            return str(getattr(e, "reason", e))
        return None
    scheme = urllib.parse.urlsplit(text).scheme
    if scheme not in ("http", "https", "file"):
        return f"{text!r} is neither an http(s):// or file:// URL template nor oci://HOST/REPO"
    try:
        names = placeholders(text)
    except ValueError as e:
        return f"{text!r} is not a valid template ({e})"
    bad = [f for f in names if f not in FIELDS]
    if bad:
        return f"unknown placeholder {{{bad[0]}}} (known: {', '.join('{' + f + '}' for f in FIELDS)})"
    if not {"sha256", "name", "path", "url"} & set(names):
        return f"{text!r} names no {{sha256}}, {{name}}, {{path}} or {{url}}: every artifact would get the same URL"
    return None
