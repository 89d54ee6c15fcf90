"""Debian control paragraphs (Packages indices, Release files, dpkg status)."""

from __future__ import annotations

from collections.abc import Iterator


def paragraphs(text: str) -> Iterator[dict[str, str]]:
    """Each paragraph as field -> value (continuation lines kept, joined with newlines).

    Field names are as written (case kept); blank lines separate paragraphs."""
    fields: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
            continue
        if line[0] in " \t":
            if last is not None:
                fields[last] += "\n" + line
            continue
        if line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        last = name.strip()
        fields[last] = value.strip()
    if fields:
        yield fields


def format_paragraph(fields: dict[str, str]) -> str:
    out = []
    for k, v in fields.items():
        first, *rest = v.split("\n")
        out.append(f"{k}: {first}".rstrip())
        out.extend(rest)
    return "\n".join(out) + "\n"
