"""`build`, `plan`, `lock` (and `lock diff`), `outdated`: the commands that evaluate, build and lock."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import msgspec

from ..errors import UserError
from ..outputs import FORMATS
from .options import (
    SNAPSHOTS_OPTION,
    build_mode,
    cache_options,
    open_cache,
    per_template,
    printer_for,
    progress_options,
    project_of,
    snapshots_on,
    store_of,
)
from .report import print_cache, print_result, result_json


@click.command()
@click.option("--locked", is_flag=True, help="Refuse unless the lock describes this build exactly.")
@click.option("--frozen", is_flag=True, help="Use the lock's pins as they are, unchecked; do not write it.")
@click.option("--offline", is_flag=True, help="Use only artifacts already in the store; never download.")
@click.option("--format", "formats", multiple=True, type=click.Choice(list(FORMATS)),
              help="Output format(s). Default: the template's `formats`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder. Default: dist/ in the project.")
@click.option("--jobs", type=click.IntRange(1, 64), default=None, help="Compression threads. Default: all cores.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")
@cache_options
@SNAPSHOTS_OPTION
@per_template
@progress_options
@click.pass_context
def build(ctx, locked, frozen, offline, formats, out, jobs, as_json, snaps, **cache_opts) -> None:
    """Build the template: every layer the store lacks, then the archive and the lock.

    \b
    Example:
      lxclayer build --locked
      lxclayer build --format tar.zst --store /var/cache/lxclayer
    """
    from .. import build as b

    project = project_of(ctx)
    printer = printer_for(ctx, project, quiet=as_json)
    cache = open_cache(project, printer, **cache_opts)
    try:
        res = b.build(project, store_of(ctx), mode=build_mode(locked, frozen), offline=offline,
                      formats=list(formats) or None, out_dir=out, jobs=jobs, events=printer, cache=cache,
                      snapshots_on=snapshots_on(snaps))
    finally:
        if cache is not None:
            cache.close()
    if as_json:
        click.echo(msgspec.json.encode(result_json(res)).decode())
    else:
        print_result(res)
        print_cache(res.cache, cache.where if cache else "")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@per_template
@click.pass_context
def plan(ctx, as_json) -> None:
    """Say per layer whether it is cached or must be built, and why. Builds nothing.

    \b
    Example:
      lxclayer plan
      lxclayer plan --json | jq '.[] | select(.state == "build")'
    """
    from .. import build as b
    from ..lock import toml as locktoml

    project = project_of(ctx)
    store = store_of(ctx)
    lock = locktoml.read(project.lock_file)
    plans = b.plan(project, store, lock)
    if as_json:
        click.echo(msgspec.json.encode([{"name": p.name, "kind": p.kind, "state": p.state, "reasons": p.reasons,
                                          "input": p.input, "output": p.output} for p in plans]).decode())
        return
    width = max(len(p.name) for p in plans)
    for p in plans:
        why = f"  ({'; '.join(p.reasons)})" if p.state == "build" and p.reasons else ""
        click.echo(f"{p.state:6}  {p.name:{width}}  [{p.kind}]{why}")


@click.group(invoke_without_command=True)
@click.option("--upgrade", is_flag=True, help="Resolve every pin again, not only those of changed layers.")
@click.option("--layer", "upgrade_layers", multiple=True, metavar="NAME",
              help="With --upgrade: only this layer's pins (repeatable).")
@click.option("--security-only", is_flag=True,
              help="With --upgrade: only move .debs to newer versions of the -security suites.")
@click.option("--offline", is_flag=True, help="Use only artifacts already in the store.")
@cache_options
@SNAPSHOTS_OPTION
@per_template
@progress_options
@click.pass_context
def lock(ctx, upgrade, upgrade_layers, security_only, offline, snaps, **cache_opts) -> None:
    """Resolve pins, build, and write locks/<template>.lock.

    The lock records output digests and the archive's sha256, so locking builds what is missing.

    \b
    Example:
      lxclayer lock              # re-resolve the layers whose definition changed
      lxclayer lock --upgrade    # re-resolve everything
      lxclayer lock --upgrade --layer postgresql
      lxclayer lock --upgrade --security-only   # only security updates of pinned .debs
      lxclayer lock diff         # what changed against the lock in git HEAD
    """
    if ctx.invoked_subcommand is not None:
        return
    from .. import build as b

    project = project_of(ctx)
    store = store_of(ctx)
    if (upgrade_layers or security_only) and not upgrade:
        raise click.UsageError("--layer and --security-only go with --upgrade")
    if offline and security_only:
        raise click.UsageError("--security-only reads the -security indices; it cannot run with --offline")
    repin = None
    if upgrade_layers or security_only:
        from ..upgrade import check_layers, pins_for

        check_layers(project, list(upgrade_layers))  # bad input: refused before anything runs
        repin = lambda lk: pins_for(project, lk, layers=list(upgrade_layers), security_only=security_only)  # noqa: E731
    printer = printer_for(ctx, project)
    cache = open_cache(project, printer, **cache_opts)
    try:
        # --upgrade: pins of every layer are resolved again (the old lock is hidden from the build).
        res = b.build(project, store, mode=b.Mode.NORMAL, offline=offline, events=printer, cache=cache,
                      ignore_lock_pins=upgrade and repin is None and project.lock_file.exists(),
                      snapshots_on=snapshots_on(snaps), repin=repin)
    finally:
        if cache is not None:
            cache.close()
    print_result(res)
    print_cache(res.cache, cache.where if cache else "")
    if not res.lock_written:
        click.echo(f"{res.lock_file} is up to date")


@lock.command("diff")
@click.argument("old", required=False)
@click.argument("new", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text")
@click.option("--git", "git_args", is_flag=True, help="Act as a git external diff driver (7 arguments).")
@click.argument("rest", nargs=-1)
@click.pass_context
def lock_diff(ctx, old, new, fmt, git_args, rest) -> None:
    """Print what changed between two lockfiles, one line per change.

    OLD and NEW are files or git revisions (`HEAD`, `main~1`, `REV:path`). Default: the lock in
    git HEAD against the working tree.

    \b
    Example:
      lxclayer lock diff
      lxclayer lock diff main HEAD --format markdown
      git config diff.lxclayer-lock.command 'lxclayer lock diff --git'
    """
    from ..lock import diff as d

    if git_args:
        click.echo(d.git_external([a for a in (old, new, *rest) if a is not None]), nl=False)
        return
    project = project_of(ctx)
    path = project.lock_file
    old_lock = d.load_side(old or "HEAD", project.root, path)
    new_lock = d.load_side(new, project.root, path)
    click.echo(d.render(d.diff(old_lock, new_lock), fmt), nl=False)


@click.command()
@click.option("--template", "template_name", metavar="NAME", default=None,
              help="The template to check (default: the project's default-template).")
@click.option("--all", "all_templates", is_flag=True, help="Every template of the project.")
@click.option("--security", is_flag=True, help="Only security updates count (the -security suites).")
@click.option("--json", "as_json", is_flag=True, help='Print {"outdated": [...]} on stdout.')
@click.option("--offline", is_flag=True, hidden=True)
@click.pass_context
def outdated(ctx, template_name, all_templates, security, as_json, offline) -> None:
    """Say which pinned packages and wheels have newer versions at their sources today.

    One line per source package: locked -> available, the pocket (security, updates,
    release; `index` for wheels), the packages, layers and templates. Exit code 0: nothing
    outdated; 1: something is (with --security: a security update); 2: bad input or a source
    that cannot be read.

    \b
    Example:
      lxclayer outdated --all
      lxclayer outdated --security --json    # a CI gate: exit 1 when a security fix is out
    """
    from .. import outdated as od
    from ..errors import BuildError

    if offline:
        raise UserError("outdated reads the sources' current indices; it cannot run with --offline")
    if template_name and all_templates:
        raise click.UsageError("--template and --all exclude each other")
    if template_name:
        ctx.obj["template_name"] = template_name
    names = list(project_of(ctx).templates) if all_templates else [None]
    found = []
    indices: dict = {}
    for name in names:
        if name is not None:
            ctx.obj["template_name"] = name
        try:
            found += od.outdated(project_of(ctx), security_only=security, indices=indices)
        except BuildError as e:
            raise UserError(e.message()) from None  # exit 2: not "outdated", not "current"
    if as_json:
        click.echo(msgspec.json.encode(od.Report(outdated=found)).decode())
    else:
        click.echo(od.render_text(found), nl=False)
        if not found:
            click.echo("nothing outdated" + (" (security)" if security else ""), err=True)
    sys.exit(1 if found else 0)


