"""How the commands print results: archive lines, the JSON report, the cache line, damage."""

from __future__ import annotations

import click
import msgspec

from ..progress.render import size


def print_cache(stats, where: str) -> None:
    if stats is None:
        return
    parts = [f"{len(stats.pulled)} layer(s) pulled"]
    if stats.outputs_pulled:
        parts.append(f"{stats.outputs_pulled} output blob(s) pulled")
    parts.append(f"{len(stats.pushed)} layer(s) pushed")
    if stats.outputs_pushed:
        parts.append(f"{stats.outputs_pushed} output blob(s) pushed")
    if stats.refused:
        parts.append(f"refused: {', '.join(stats.refused)}")
    if stats.unavailable:
        parts.append("unavailable")
    click.echo(f"cache {where}: {', '.join(parts)}", err=True)


def result_json(res) -> dict:
    return {
        "layers": [{"name": p.name, "kind": p.kind, "state": p.state, "reasons": p.reasons,
                    "input": p.input, "output": p.output, "seconds": round(p.seconds, 3),
                    "program_seconds": round(p.program_seconds, 3)} for p in res.layers],
        "archives": [{"format": a.format, "path": str(a.path), "sha256": a.sha256, "size": a.size,
                      "composed": a.composed, "chunks": a.chunks, "reused": a.reused, "ahead": a.ahead,
                      **({"image": a.image} if a.image else {})} for a in res.archives],
        "lock": str(res.lock_file), "lock_written": res.lock_written, "seconds": round(res.seconds, 3),
        "sbom": str(res.sbom) if res.sbom else None,
        "provenance": str(res.provenance) if res.provenance else None,
        **({"cache": msgspec.to_builtins(res.cache)} if res.cache else {}),
    }


def print_result(res) -> None:
    for a in res.archives:
        click.echo(f"{a.path}  {size(a.size)}  sha256 {a.sha256}")
        if a.image:
            click.echo(f"  image {a.image}")
    if res.sbom:
        click.echo(f"{res.sbom}  SPDX 2.3 SBOM")
    if res.provenance:
        click.echo(f"{res.provenance}  SLSA provenance v1")
    if res.lock_written:
        click.echo(f"wrote {res.lock_file}")
    click.echo(f"done in {res.seconds:.1f}s", err=True)


def report_damage(checked, ok_word: str | None, hint: bool = True) -> int:
    """One line per damaged blob (its layer, store entry and files), damaged or missing entry;
    `NAME: ok_word` for a whole layer. The number of damaged layers."""
    bad = 0
    for name, damage in checked.layers.items():
        for d in damage:
            click.echo(d.line())
        if damage:
            bad += 1
        elif ok_word:
            click.echo(f"{name}: {ok_word}")
    if hint and any(d.what != "missing" for d in checked.damage):
        click.echo(f"{len(checked.damage)} problem(s) in {bad} layer(s); `lxclayer verify --repair` builds them again",
                   err=True)
    return bad



def report_results(results: dict[str, list[str]], bad_word: str, ok_word: str | None) -> int:
    """Print per layer `NAME: bad_word` and its lines, or `NAME: ok_word`; the number of bad ones."""
    bad = 0
    for name, lines in results.items():
        if lines:
            bad += 1
            click.echo(f"{name}: {bad_word}")
            for line in lines:
                click.echo(f"  {line}")
        elif ok_word:
            click.echo(f"{name}: {ok_word}")
    return bad

