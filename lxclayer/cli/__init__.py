"""The `lxclayer` command: a thin layer over the library API.

Errors a user can cause print one line (`lxclayer: error: FILE: key KEY: reason`) and exit
with code 2; nothing a user can cause prints a traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from pathlib import Path

import click
import msgspec

from ..errors import UserError
from ..outputs import FORMATS
from ..progress import MODES, Printer


def _human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _project(ctx: click.Context):
    from ..definitions import load_project

    o = ctx.obj
    for given in (o.get("template_name"), o["template"]):
        if given is not None and not str(given).strip():
            raise UserError(f"--template {str(given)!r}: a template name or file cannot be empty")
    chosen = o.get("template_name") or o["template"]
    if chosen is not None and (chosen.endswith(".toml") or "/" in chosen):
        return load_project(root=o["project"], template_file=Path(chosen))
    return load_project(root=o["project"], template=chosen)


def per_template(f):
    """`--template NAME` and `--all` for a command: run it for one template (default: the
    project's default) or for each in turn; the exit code is the worst of them."""
    import functools

    @click.option("--template", "template_name", metavar="NAME", default=None,
                  help="The template to use (default: the project's default-template).")
    @click.option("--all", "all_templates", is_flag=True, help="Every template of the project, in turn.")
    @click.pass_context
    @functools.wraps(f)
    def run(ctx, template_name, all_templates, **kw):
        if template_name is not None and not template_name.strip():
            raise UserError(f"--template {template_name!r}: a template name cannot be empty")
        if template_name and all_templates:
            raise click.UsageError("--template and --all exclude each other")
        if template_name:
            ctx.obj["template_name"] = template_name
        if not all_templates:
            return ctx.invoke(f, **kw)
        worst = 0
        for name in _project(ctx).templates:
            ctx.obj["template_name"] = name
            click.echo(f"== {name}", err=True)
            try:
                ctx.invoke(f, **kw)
            except SystemExit as e:
                worst = max(worst, e.code if isinstance(e.code, int) else 1)
        if worst:
            sys.exit(worst)

    return run


def _store(ctx: click.Context):
    from ..store import Store

    return Store(ctx.obj["store"])


def cache_options(f):
    """--cache and its companions, for the commands that build (docs/cache.md)."""
    opts = [
        click.option("--cache", "cache_url", metavar="REF", default=None,
                     help="Shared layer cache, oci://HOST[:PORT]/REPOSITORY (or `off`). Default: "
                          "$LXCLAYER_CACHE, then [cache] url in lxclayer.toml."),
        click.option("--cache-mode", type=click.Choice(["pull", "push"]), default=None,
                     help="pull: only read the cache; push: also upload what was built. "
                          "Default: $LXCLAYER_CACHE_MODE, lxclayer.toml, then push under CI, else pull."),
        click.option("--cache-auth", type=click.Path(dir_okay=False), default=None,
                     help="Registry auth file (docker's config.json format). Default: $REGISTRY_AUTH_FILE, "
                          "then the files podman and docker use."),
        click.option("--cache-ca", type=click.Path(dir_okay=False), default=None,
                     help="CA certificates for the cache's HTTPS (default: the system's)."),
        click.option("--cache-insecure", is_flag=True,
                     help="Allow plain HTTP to a cache that is not on loopback."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _cache(project, printer, cache_url, cache_mode, cache_auth, cache_ca, cache_insecure):
    """The run's shared cache, or None when none is configured (the registry code is imported
    only then: a no-op build stays fast)."""
    import os

    from ..settings import load as load_settings

    if not (cache_url or os.environ.get("LXCLAYER_CACHE") or load_settings(project.root).cache.url):
        return None
    from ..cache import Cache, settings

    s = settings(project.root, url=cache_url, mode=cache_mode, auth_file=cache_auth, ca_file=cache_ca,
                 insecure=cache_insecure)
    return None if s is None else Cache(s, printer.warn)


def _print_cache(stats, where: str) -> None:
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


def progress_options(f):
    """`--progress`, `-v` and `--log` for a command that builds (docs/progress.md); after a
    failure, the lines the console has to add (the failing program's last lines, the log's
    path) are printed under the one-line error."""

    @click.option("--progress", "progress_mode", type=click.Choice(MODES), default="auto", show_default=True,
                  help="How to show the build: tty (live lines and bars), plain (line by line, for CI logs), "
                       "json (one JSON object per event); auto: tty on a terminal, else plain.")
    @click.option("-v", "--verbose", is_flag=True, help="Also show program command lines and their output.")
    @click.option("--log", "log_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Write the build's log here (default: STORE/logs/TIME-TEMPLATE.log).")
    @click.pass_context
    @functools.wraps(f)
    def run(ctx, progress_mode, verbose, log_file, **kw):
        ctx.obj["progress"] = (progress_mode, verbose, log_file)
        try:
            return ctx.invoke(f, **kw)
        except (UserError, OSError) as e:
            console = ctx.obj.get("console")
            for note in console.notes() if console is not None else []:
                e.add_note(note)
            raise
        finally:
            console = ctx.obj.pop("console", None)
            if console is not None:
                console.close()

    return run


def _printer(ctx: click.Context, project, *, quiet: bool = False) -> Printer:
    """The events object of a build run by a command with `progress_options`: its console
    renders as `--progress` says and logs to `--log` or STORE/logs/."""
    from ..progress import Console, Reporter, log_path

    mode, verbose, log_file = ctx.obj.get("progress", ("auto", False, None))
    if quiet and mode == "auto":
        mode = "quiet"  # --json: the report on stdout, only warnings on stderr
    logs = _store(ctx).logs_dir()
    console = Console("plain" if mode == "quiet" else mode, verbose=verbose, quiet=mode == "quiet",
                      log=log_file or (lambda: log_path(logs, project.template.name)))
    ctx.obj["console"] = console
    return Reporter(console)  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Project folder (holding layers/ and locks/). Default: found from the current folder.")
@click.option("--template", default=None, metavar="NAME|FILE",
              help="Template, by name or definition file. Default: the project's default-template "
                   "(lxclayer.toml), or its only template.")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), envvar="LXCLAYER_STORE",
              default=None, help="Store folder. Default: $LXCLAYER_STORE or ~/.cache/lxclayer/store.")
@click.version_option(package_name="lxclayer")
@click.pass_context
def cli(ctx: click.Context, project: Path | None, template: Path | None, store: Path | None) -> None:
    """Build reproducible, layered LXC templates for Proxmox VE.

    \b
    Example:
      lxclayer plan                 # what would be built, and why
      lxclayer build --locked       # build exactly what locks/ describes
    """
    ctx.obj = {"project": project, "template": template, "store": store}


def _mode(locked: bool, frozen: bool):
    from ..build import Mode

    if locked and frozen:
        raise click.UsageError("--locked and --frozen exclude each other")
    return Mode.LOCKED if locked else Mode.FROZEN if frozen else Mode.NORMAL


SNAPSHOTS_OPTION = click.option(
    "--snapshots", "snaps", type=click.Choice(["on", "off"]), default=None,
    help="Build program layers on overlay snapshots of the layers below (default: on, or $LXCLAYER_SNAPSHOTS);"
         " off: on a full copy of them, for file systems without overlayfs.")


def _on(snaps: str | None) -> bool | None:
    return None if snaps is None else snaps == "on"


def _result_json(res) -> dict:
    return {
        "layers": [{"name": p.name, "kind": p.kind, "state": p.state, "reasons": p.reasons,
                    "input": p.input, "output": p.output, "seconds": round(p.seconds, 3),
                    "program_seconds": round(p.program_seconds, 3)} for p in res.layers],
        "archives": [{"format": a.format, "path": str(a.path), "sha256": a.sha256, "size": a.size,
                      "composed": a.composed, "chunks": a.chunks, "reused": a.reused,
                      **({"image": a.image} if a.image else {})} for a in res.archives],
        "lock": str(res.lock_file), "lock_written": res.lock_written, "seconds": round(res.seconds, 3),
        "sbom": str(res.sbom) if res.sbom else None,
        "provenance": str(res.provenance) if res.provenance else None,
        **({"cache": msgspec.to_builtins(res.cache)} if res.cache else {}),
    }


def _print_result(res) -> None:
    for a in res.archives:
        click.echo(f"{a.path}  {_human_size(a.size)}  sha256 {a.sha256}")
        if a.image:
            click.echo(f"  image {a.image}")
    if res.sbom:
        click.echo(f"{res.sbom}  SPDX 2.3 SBOM")
    if res.provenance:
        click.echo(f"{res.provenance}  SLSA provenance v1")
    if res.lock_written:
        click.echo(f"wrote {res.lock_file}")
    click.echo(f"done in {res.seconds:.1f}s", err=True)


@cli.command()
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

    project = _project(ctx)
    printer = _printer(ctx, project, quiet=as_json)
    cache = _cache(project, printer, **cache_opts)
    try:
        res = b.build(project, _store(ctx), mode=_mode(locked, frozen), offline=offline,
                      formats=list(formats) or None, out_dir=out, jobs=jobs, events=printer, cache=cache,
                      snapshots_on=_on(snaps))
    finally:
        if cache is not None:
            cache.close()
    if as_json:
        click.echo(msgspec.json.encode(_result_json(res)).decode())
    else:
        _print_result(res)
        _print_cache(res.cache, cache.where if cache else "")


@cli.command()
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

    project = _project(ctx)
    store = _store(ctx)
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


@cli.group(invoke_without_command=True)
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

    project = _project(ctx)
    store = _store(ctx)
    if (upgrade_layers or security_only) and not upgrade:
        raise click.UsageError("--layer and --security-only go with --upgrade")
    if offline and security_only:
        raise click.UsageError("--security-only reads the -security indices; it cannot run with --offline")
    repin = None
    if upgrade_layers or security_only:
        from ..upgrade import check_layers, pins_for

        check_layers(project, list(upgrade_layers))  # bad input: refused before anything runs
        repin = lambda lk: pins_for(project, lk, layers=list(upgrade_layers), security_only=security_only)  # noqa: E731
    printer = _printer(ctx, project)
    cache = _cache(project, printer, **cache_opts)
    try:
        # --upgrade: pins of every layer are resolved again (the old lock is hidden from the build).
        res = b.build(project, store, mode=b.Mode.NORMAL, offline=offline, events=printer, cache=cache,
                      ignore_lock_pins=upgrade and repin is None and project.lock_file.exists(),
                      snapshots_on=_on(snaps), repin=repin)
    finally:
        if cache is not None:
            cache.close()
    _print_result(res)
    _print_cache(res.cache, cache.where if cache else "")
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
    project = _project(ctx)
    path = project.lock_file
    old_lock = d.load_side(old or "HEAD", project.root, path)
    new_lock = d.load_side(new, project.root, path)
    click.echo(d.render(d.diff(old_lock, new_lock), fmt), nl=False)


@cli.command()
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
    names = list(_project(ctx).templates) if all_templates else [None]
    found = []
    indices: dict = {}
    for name in names:
        if name is not None:
            ctx.obj["template_name"] = name
        try:
            found += od.outdated(_project(ctx), security_only=security, indices=indices)
        except BuildError as e:
            raise UserError(e.message()) from None  # exit 2: not "outdated", not "current"
    if as_json:
        click.echo(msgspec.json.encode(od.Report(outdated=found)).decode())
    else:
        click.echo(od.render_text(found), nl=False)
        if not found:
            click.echo("nothing outdated" + (" (security)" if security else ""), err=True)
    sys.exit(1 if found else 0)


@cli.command()
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the violations as JSON.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False), default=None,
              help="Also check the signature by this ECDSA public key (PEM): of the signed provenance "
                   "beside ARCHIVE, or of the image when ARCHIVE is HOST/REPO:TAG (docs/signing.md).")
@click.option("--pgp-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also check ARCHIVE.asc, or the channel's SHA512SUMS.asc beside it, with sqv.")
def check(archive, as_json, key_file, pgp_cert) -> None:
    """Check a template archive (or OCI image .tar, every layer) against the rules `pct create` relies on.

    Exit 0: fine; 1: violations (each listed with its path) or a bad signature; 2: unreadable.

    \b
    Example:
      lxclayer check dist/debian-12-stock-analysis_1.0.0-1_amd64.tar.gz
      lxclayer check /var/lib/vz/template/cache/debian-12-standard_12.12-1_amd64.tar.zst
      lxclayer check channel/debian-13-stock-analysis_1.0.0-1_amd64.tar.gz --pgp-cert channel.cert
      lxclayer check registry.example.com/templates/stock-analysis:1.0.0-1 --key release.pub
    """
    from ..outputs import check as check_output

    if key_file or pgp_cert:
        from ..trust import verify

        bad_sig = _check_signatures(verify, archive, key_file, pgp_cert)
        if not archive.is_file() or not archive.name.endswith((*verify.ARCHIVE_SUFFIXES, ".tar.xz")):
            # a signature check of a file that is no template archive (aplinfo.dat, an SBOM)
            sys.exit(1 if bad_sig else 0)
    else:
        bad_sig = False
    violations = check_output(archive)
    if as_json:
        click.echo(msgspec.json.encode(violations).decode())
    else:
        for v in violations:
            click.echo(f"{v.path}: {v.message} ({v.rule})")
        click.echo(f"{archive}: {'ok' if not violations else f'{len(violations)} violation(s)'}", err=True)
    sys.exit(1 if violations or bad_sig else 0)


def _check_signatures(verify, archive: Path, key_file, pgp_cert) -> bool:
    """Print one line per signature check (on stderr); True when any failed."""
    from ..trust import keys

    verdicts = []
    key = keys.load_public(key_file) if key_file else None
    if key is not None:
        if archive.exists():
            verdicts.append(verify.check_file_key(archive, key))
        else:  # not a file: an image in a registry
            verdicts += verify.check_image(str(archive), key)
    if pgp_cert is not None:
        verdicts.append(verify.check_file_pgp(archive, pgp_cert))
    for v in verdicts:
        click.echo(f"{archive}: {'signature ok' if v.ok else 'signature BAD'}: {v.what}", err=True)
    return not all(v.ok for v in verdicts)


@cli.command()
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
    res = collect(_store(ctx), project_locks, dry_run=dry_run, project=str(project_root))
    verb = "would free" if dry_run else "freed"
    for lock_file in res.live_roots:
        click.echo(f"root {lock_file}")
    for lock_file in res.dead_roots:
        click.echo(f"{'would remove' if dry_run else 'removed'} dead root {lock_file} (the lockfile is gone)")
    if dry_run:
        for digest_, layer, kind, size in res.freed_entries:
            click.echo(f"would free layer entry {digest_[:12]} ({layer}, {kind}, {_human_size(size)}):"
                       " no live root's lockfile names it")
    click.echo(f"{verb} {_human_size(res.freed)}: {res.layers} layer entries, {res.blobs} blobs,"
               f" {res.chunks} chunks, {res.artifacts} artifacts; kept {res.kept} layer entries"
               f" for {len(res.live_roots)} root(s)")
    click.echo(f"snapshots: {verb} {res.snapshots}; the kept ones take {_human_size(res.snapshot_bytes)}")


@cli.command()
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

    project = _project(ctx)
    store = _store(ctx)
    bad = 0
    # A rebuild needs no lock (it builds what is missing first); a store check checks the lock's.
    if repair:
        scan = scan_store(project, store, list(layers))
        checked = scan.checked
        _report_damage(checked, "ok", hint=False)
        cache = _cache(project, Printer(), **cache_opts)
        try:
            repaired = run_repair(project, store, scan, events=Printer(), cache=cache)
        finally:
            if cache is not None:
                cache.close()
        for r in repaired:
            how = "pulled again from the cache" if r.how == "pulled" else "built again"
            click.echo(f"repaired {r.layer}: {how}, output {r.output[:12]} (the lock's)")
        if checked.damage:  # read again what was damaged: it must be whole now
            bad = _report_damage(verify_store(project, store, sorted({d.layer for d in checked.damage})), None,
                                 hint=False)
    elif not rebuild or project.lock_file.exists():
        bad += _report_damage(verify_store(project, store, list(layers)), None if rebuild else "ok")
    if rebuild:
        bad += _report(verify_rebuild(project, store, list(layers), events=_printer(ctx, project)),
                       "not reproducible",
                       "reproducible")
    cache = None if repair else _cache(project, Printer(), **cache_opts)
    if cache is not None:
        bad += _verify_cache(project, cache, list(layers))
    sys.exit(1 if bad else 0)


def _report_damage(checked, ok_word: str | None, hint: bool = True) -> int:
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


def _verify_cache(project, cache, layers: list[str]) -> int:
    """Per locked layer, what the cache's entry claims against the lock (a poisoned or stale
    entry would be refused by a --locked build; this names it before one runs)."""
    from ..cache import status
    from ..lock import toml as locktoml

    lock = locktoml.read(project.lock_file)
    if lock is None:
        raise UserError(f"{project.lock_file}: no lock to check the cache against")
    try:
        results = {}
        for st in status(cache, lock, outputs_too=True):
            if layers and st.name not in layers:
                continue
            want = lock.layers[st.name].output
            lines = [] if not st.cached or st.output == want else [
                f"the cache's entry claims output {st.output or '(none)'}, the lock records {want}"]
            results[f"cache {st.name}"] = lines
            if not st.cached:
                click.echo(f"cache {st.name}: not cached")
                del results[f"cache {st.name}"]
    finally:
        cache.close()
    return _report(results, "differs from the lock", "ok")


def _report(results: dict[str, list[str]], bad_word: str, ok_word: str | None) -> int:
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


@cli.command()
@click.argument("reference")
@click.option("--auth", "auth_file", type=click.Path(dir_okay=False), default=None,
              help="Registry auth file (docker's config.json format). Default: $REGISTRY_AUTH_FILE, "
                   "then the files podman and docker use.")
@click.option("--ca", "ca_file", type=click.Path(dir_okay=False), default=None,
              help="CA certificates for the registry's HTTPS (default: the system's).")
@click.option("--insecure", is_flag=True,
              help="Allow plain HTTP to a registry that is not on loopback.")
@click.option("--sign-key", type=click.Path(dir_okay=False), default=None,
              help="Sign the image with this ECDSA P-256 private key (PKCS#8 PEM; docs/signing.md).")
@click.option("--sign-passphrase-file", type=click.Path(dir_okay=False), default=None,
              help="File whose first line is the signing key's passphrase "
                   "(default: $LXCLAYER_SIGN_PASSPHRASE_FILE).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@per_template
@progress_options
@click.pass_context
def push(ctx, reference, auth_file, ca_file, insecure, sign_key, sign_passphrase_file, as_json) -> None:
    """Push the template's OCI image, with its SBOM attached, to a registry.

    REFERENCE is HOST[:PORT]/REPOSITORY[:TAG] (the tag defaults to VERSION-RELEASE). What is
    pushed is what the lock pins: the image is made by a `--locked` build of the `oci` format
    (nothing when dist/ is up to date); only blobs the registry lacks are sent. Prints the
    image digest to give to `skopeo copy` or Proxmox VE's pull from a registry.

    \b
    Example:
      lxclayer push registry.example.com/templates/stock-analysis
      skopeo copy docker://registry.example.com/templates/stock-analysis@sha256:... \\
          oci-archive:/var/lib/vz/template/cache/stock-analysis.tar
    """
    from ..push import push as run_push

    project = _project(ctx)
    res = run_push(project, _store(ctx), reference, auth_file=auth_file, ca_file=ca_file,
                   insecure=insecure, events=_printer(ctx, project, quiet=as_json), sign_key=sign_key,
                   passphrase_file=sign_passphrase_file)
    if as_json:
        click.echo(msgspec.json.encode({"reference": res.reference, "digest": res.digest, "blobs": res.blobs,
                                        "sent": res.sent, "sbom": res.sbom,
                                        "signature": res.signature, "provenance": res.provenance}).decode())
    else:
        click.echo(f"pushed {res.reference} ({res.sent} of {res.blobs} blobs sent)")
        click.echo(f"  image {res.reference.rsplit(':', 1)[0]}@{res.digest}")
        if res.signature:
            click.echo(f"  signature {res.signature} (tag sha256-{res.digest.removeprefix('sha256:')}.sig)")
        click.echo(f"  sbom  {res.sbom} (a referrer of the image)")
        click.echo(f"  provenance {res.provenance} ({'signed, DSSE' if res.signature else 'unsigned'}; a referrer)")


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--pgp-key", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="OpenPGP secret key (unencrypted) that signs SHA512SUMS and aplinfo.dat, with Debian's sq.")
@click.option("--template", "names", multiple=True, metavar="NAME",
              help="A template to publish (repeatable). Default: the project's default template.")
@click.option("--all", "all_templates", is_flag=True, help="Every template of the project.")
@click.option("--maintainer", default=None, help="aplinfo Maintainer field.")
@click.option("--infopage", default=None, help="aplinfo Infopage field (a URL).")
@click.pass_context
def publish(ctx, folder, pgp_key, names, all_templates, maintainer, infopage) -> None:
    """Write a signed template channel to FOLDER: the built archives (checked against the
    locks), SBOMs and provenance, SHA512SUMS and pveam's aplinfo.dat, each with a detached
    OpenPGP signature (.asc) that `sqv` accepts. FOLDER is replaced only when the new one is
    complete (docs/signing.md).

    \b
    Example:
      lxclayer publish /srv/www/templates --all --pgp-key ~/.config/lxclayer/channel.pgp
      sqv --keyring channel.cert /srv/www/templates/SHA512SUMS.asc /srv/www/templates/SHA512SUMS
    """
    from ..definitions import load_project
    from ..publish import DEFAULT_INFOPAGE, DEFAULT_MAINTAINER
    from ..publish import publish as run_publish

    if names and all_templates:
        raise click.UsageError("--template and --all exclude each other")
    first = _project(ctx)
    chosen = list(first.templates) if all_templates else list(dict.fromkeys(names)) or [first.template.name]
    projects = [first if n == first.template.name else load_project(root=first.root, template=n) for n in chosen]
    printer = Printer()
    res = run_publish(projects, folder, pgp_key, maintainer=maintainer or DEFAULT_MAINTAINER,
                      infopage=infopage or DEFAULT_INFOPAGE, warn=printer.warn)
    click.echo(f"published {', '.join(res.templates)} to {res.folder} ({len(res.files)} files)")


@cli.group("key")
def key_group() -> None:
    """Signing keys for `push --sign-key` (docs/signing.md)."""


@key_group.command("generate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--passphrase-file", type=click.Path(dir_okay=False), default=None,
              help="Encrypt the private key with the first line of this file "
                   "(default: $LXCLAYER_SIGN_PASSPHRASE_FILE; none: unencrypted).")
def key_generate(path, passphrase_file) -> None:
    """Write a new ECDSA P-256 key pair: PATH (PKCS#8 PEM, mode 0600) and PATH.pub (the public
    key, SubjectPublicKeyInfo PEM: what a node's policy.json `keyPath` names).

    \b
    Example:
      lxclayer key generate ~/.config/lxclayer/release.key
      lxclayer push registry.example.com/templates/stock-analysis --sign-key ~/.config/lxclayer/release.key
    """
    from ..trust import keys

    private, public = keys.generate(path, passphrase_file)
    click.echo(f"wrote {private} (private, 0600) and {public} (public)")


@cli.group("cache")
def cache_group() -> None:
    """The shared layer cache on an OCI registry (docs/cache.md)."""


def _cache_locks(ctx, all_roots: bool):
    """(name, lockfile) pairs: every lock in the project's locks/, or with --all every live GC
    root's (every project that builds into this store)."""
    from ..lock import toml as locktoml

    project = _project(ctx)
    found = []
    if not all_roots:
        folder = project.root / "locks"
        for f in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
            lock = locktoml.read(f)
            if lock is not None:
                found.append((lock.template.name, lock))
        if not found:
            raise UserError(f"{folder}: no lock; run `lxclayer build` first")
        return project, found
    for root in _store(ctx).roots():
        if root.live:
            lock = locktoml.read(root.lock_file)
            if lock is not None:
                found.append((f"{lock.template.name} ({root.lock_file})", lock))
    return project, found


def _required_cache(project, printer, cache_opts):
    cache = _cache(project, printer, **cache_opts)
    if cache is None:
        raise UserError("no cache given: --cache REF, $LXCLAYER_CACHE, or [cache] url in lxclayer.toml")
    cache.required = True  # its faults end the command in one line, not a "building without it"
    return cache


@cache_group.command("push")
@click.option("--all", "all_roots", is_flag=True,
              help="Every lock that builds into this store (its GC roots), not only this project's locks.")
@click.option("--artifacts", "artifacts_too", is_flag=True,
              help="Also every pinned .deb and wheel, as blobs named by their sha256 (an [artifacts] fallback).")
@cache_options
@click.pass_context
def cache_push(ctx, all_roots, artifacts_too, **cache_opts) -> None:
    """Upload what the local store holds for the project's locks (every template); only what
    the cache lacks is sent.

    \b
    Example:
      lxclayer cache push --cache oci://registry.example.com/team/lxclayer-cache
      lxclayer cache push --artifacts   # and the pinned .debs and wheels (docs/cache.md)
    """
    from ..cache import push_lock

    project, locks = _cache_locks(ctx, all_roots)
    printer = Printer()
    cache = _required_cache(project, printer, cache_opts)
    incomplete = _push_artifacts(cache, locks, _store(ctx)) if artifacts_too else 0
    store = _store(ctx)
    bad = 0
    try:
        with store.session():
            for name, lock in locks:
                before = len(cache.stats.pushed)
                missing = push_lock(cache, lock, store)
                if cache.stats.unavailable:
                    raise UserError(f"cache {cache.where} unavailable: {cache.stats.unavailable}")
                pushed = len(cache.stats.pushed) - before
                click.echo(f"{name}: {pushed} layer(s) pushed, {len(lock.layers) - len(missing) - pushed} "
                           "already cached" + (f"; not in the store: {', '.join(missing)}" if missing else ""))
                bad += bool(missing)
    finally:
        cache.close()
    sys.exit(1 if bad or incomplete else 0)


def _push_artifacts(cache, locks, store) -> int:
    """Push every lock's pinned .debs and wheels; the number of locks whose pins the store
    does not all hold."""
    from ..artifacts import push_artifacts
    from ..registry import RegistryError, client_for

    st = cache.settings
    incomplete = 0
    try:
        with store.session(), client_for(st.url, auth_file=st.auth_file, ca_file=st.ca_file,
                                         insecure=st.insecure) as client:
            for name, lock in locks:
                r = push_artifacts(client, lock, store)
                missing = ""
                if r.missing:
                    more = f" and {len(r.missing) - 5} more" if len(r.missing) > 5 else ""
                    missing = f"; {len(r.missing)} not in the store: {', '.join(r.missing[:5])}{more}"
                click.echo(f"{name}: {r.artifacts} artifact(s) in {cache.where} as {r.tag}{missing}")
                incomplete += bool(r.missing)
    except RegistryError as e:
        cache.close()
        raise UserError(f"cache {cache.where}: {e}") from None
    return incomplete


@cache_group.command("ls")
@click.option("--all", "all_roots", is_flag=True,
              help="Every lock that builds into this store (its GC roots), not only this project's.")
@cache_options
@click.pass_context
def cache_ls(ctx, all_roots, **cache_opts) -> None:
    """Show which layers of each template (each lock in locks/) the cache has."""
    from ..cache import status

    project, locks = _cache_locks(ctx, all_roots)
    cache = _required_cache(project, Printer(), cache_opts)
    try:
        for name, lock in locks:
            st = status(cache, lock)
            click.echo(f"{name}: {sum(s.cached for s in st)} of {len(st)} layers in {cache.where}")
            for s in st:
                click.echo(f"  {'cached ' if s.cached else 'missing'}  {s.name}  {s.input}")
    finally:
        cache.close()


@cli.command("boot-test")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--timeout", type=float, default=600, show_default=True,
              help="Seconds to wait for the container to boot and for each phase.")
@click.option("--no-reboot", is_flag=True, help="Do not reboot the container and check again.")
@click.option("--no-network", is_flag=True, help="Loopback only: no veth, bridge or DHCP.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@per_template
@click.pass_context
def boot_test(ctx, archive, timeout, no_reboot, no_network, as_json) -> None:
    """Boot a template the way `pct create` and Proxmox would, and run the template's checks.

    Unpacks ARCHIVE (default: the template's archive in dist/) as an unprivileged container,
    applies what Proxmox changes at create, starts it with lxc, runs the `[[checks]]` and
    `[[faults]]` of the template definition, reboots it and checks again. Needs root and
    Debian's lxc, uidmap and systemd-container. Exit 0: every check passed; 1: some failed.

    \b
    Example:
      lxclayer build --locked && lxclayer boot-test
      lxclayer boot-test dist/debian-12-stock-analysis_1.0.0-1_amd64.tar.gz --json
    """
    from ..boottest.run import boot_test as run_boot_test

    project = _project(ctx)
    tpl = project.template
    if archive is None:
        from ..outputs import exporter

        archive = project.root / "dist" / exporter(tpl.formats[0]).filename(tpl)
        if not archive.exists():
            raise UserError(f"{archive} does not exist: run `lxclayer build` first, or name an archive")
    printer = Printer(quiet=as_json)
    report = run_boot_test(archive, list(tpl.checks), list(tpl.faults), timeout=timeout,
                           reboot=not no_reboot, network=not no_network,
                           progress=lambda m: printer._line(f"  {m}"))
    if as_json:
        click.echo(report.to_json().decode())
    else:
        click.echo(report.to_table())
    sys.exit(0 if report.ok else 1)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="lxclayer", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("lxclayer: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if e.exit_code in (1, 2) else e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except UserError as e:
        click.echo(f"lxclayer: error: {e.message()}", err=True)
        _notes(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("lxclayer: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        os._exit(0)
    except OSError as e:
        # What the machine or the user's files cause (a full disk, a read-only or missing folder,
        # `dist` being a file, no permission) is one line naming the path, not a traceback.
        # Anything else keeps its traceback: it is a bug.
        if e.errno not in _MACHINE_ERRNOS:
            raise
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f)
        click.echo(f"lxclayer: error: {where + ': ' if where else ''}{e.strerror or e}", err=True)
        _notes(e)
        sys.exit(1)


def _notes(e: BaseException) -> None:
    """Under the error line: what the build's console added (docs/progress.md)."""
    for note in getattr(e, "__notes__", ()):
        click.echo(note, err=True)


_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                   errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.EIO, errno.EMFILE, errno.ENAMETOOLONG,
                   errno.ELOOP, errno.EFBIG}


if __name__ == "__main__":
    main()
