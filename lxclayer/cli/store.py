"""`gc` and `verify`: the store's upkeep."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..progress import Printer
from ..progress.render import size
from .options import (
    cache_options,
    open_cache,
    per_template,
    printer_for,
    progress_options,
    project_of,
    store_of,
)
from .report import report_damage, report_results


@click.command()
@click.option("--dry-run", is_flag=True, help="Say what would be removed, remove nothing.")
@click.pass_context
def gc(ctx, dry_run) -> None:
    """Remove what no project using this store needs.

    Every build registers its lockfile in the store as a GC root; gc keeps everything any
    live root's lockfile names (this project's and every other project's that builds into the
    same store), and removes roots whose lockfile is gone. With --dry-run it lists what it
    would free and why.

    \b
    Example:
      lxclayer gc --dry-run
    """
    from ..gc import collect

    project_root = ctx.obj["project"]
    if project_root is None:
        from ..definitions import find_project

        project_root = find_project()
    locks_dir = Path(project_root) / "locks"
    project_locks = sorted(locks_dir.glob("*.lock")) if locks_dir.is_dir() else []
    res = collect(store_of(ctx), project_locks, dry_run=dry_run, project=str(project_root))
    verb = "would free" if dry_run else "freed"
    for lock_file in res.live_roots:
        click.echo(f"root {lock_file}")
    for lock_file in res.dead_roots:
        click.echo(f"{'would remove' if dry_run else 'removed'} dead root {lock_file} (the lockfile is gone)")
    if dry_run:
        for digest_, layer, kind, nbytes in res.freed_entries:
            click.echo(f"would free layer entry {digest_[:12]} ({layer}, {kind}, {size(nbytes)}):"
                       " no live root's lockfile names it")
    click.echo(f"{verb} {size(res.freed)}: {res.layers} layer entries, {res.blobs} blobs,"
               f" {res.chunks} chunks, {res.artifacts} artifacts; kept {res.kept} layer entries"
               f" for {len(res.live_roots)} root(s)")
    click.echo(f"snapshots: {verb} {res.snapshots}; the kept ones take {size(res.snapshot_bytes)}")


@click.command()
@click.option("--rebuild", is_flag=True,
              help="Also build each layer again (reusing only the stored layers below it and the "
                   "downloaded artifacts) and compare it with the stored one, path by path.")
@click.option("--repair", is_flag=True,
              help="Evict every damaged blob and entry found and build those layers again (or pull "
                   "them again from the cache) as the lock records them; exit 0 when all are repaired.")
@click.argument("layers", nargs=-1)
@cache_options
@per_template
@progress_options
@click.pass_context
def verify(ctx, rebuild, repair, layers, **cache_opts) -> None:
    """Check the store's entries and blobs for the locked template, naming every damaged blob
    with its layer and files; with --repair, heal them; with --rebuild, prove layers
    reproducible by building them again. Exit 1 if anything is wrong (after --repair: still wrong).

    \b
    Example:
      lxclayer verify
      lxclayer verify --repair
      lxclayer verify --rebuild postgresql
    """
    from ..verify import repair as run_repair
    from ..verify import scan_store, verify_rebuild, verify_store

    project = project_of(ctx)
    store = store_of(ctx)
    bad = 0
    # A rebuild needs no lock (it builds what is missing first); a store check checks the lock's.
    if repair:
        scan = scan_store(project, store, list(layers))
        checked = scan.checked
        report_damage(checked, "ok", hint=False)
        printer = printer_for(ctx, project)
        cache = open_cache(project, printer, **cache_opts)
        try:
            repaired = run_repair(project, store, scan, events=printer, cache=cache)
        finally:
            if cache is not None:
                cache.close()
        for r in repaired:
            how = "pulled again from the cache" if r.how == "pulled" else "built again"
            click.echo(f"repaired {r.layer}: {how}, output {r.output[:12]} (the lock's)")
        if checked.damage:  # read again what was damaged: it must be whole now
            bad = report_damage(verify_store(project, store, sorted({d.layer for d in checked.damage})), None,
                                 hint=False)
    elif not rebuild or project.lock_file.exists():
        bad += report_damage(verify_store(project, store, list(layers)), None if rebuild else "ok")
    if rebuild:
        bad += report_results(verify_rebuild(project, store, list(layers), events=printer_for(ctx, project)),
                       "not reproducible",
                       "reproducible")
    cache = None if repair else open_cache(project, Printer(), **cache_opts)
    if cache is not None:
        bad += _verify_cache(project, cache, list(layers))
    sys.exit(1 if bad else 0)



def _verify_cache(project, cache, layers: list[str]) -> int:
    """`cache NAME: not cached`, then per cached layer `ok` or how it differs from the lock."""
    from ..verify import verify_cache

    try:
        verdicts = verify_cache(project, cache, layers)
    finally:
        cache.close()
    for v in verdicts:
        if not v.cached:
            click.echo(f"cache {v.layer}: not cached")
    return report_results({f"cache {v.layer}": v.problems for v in verdicts if v.cached}, "differs from the lock", "ok")
