"""What the commands share: the project and store they act on, `--template`/`--all`, the
shared cache's options, `--progress`/`-v`/`--log`, the build mode and `--snapshots`."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from ..errors import UserError
from ..progress import MODES, Printer


def project_of(ctx: click.Context):
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
        for name in project_of(ctx).templates:
            ctx.obj["template_name"] = name
            click.echo(f"== {name}", err=True)
            try:
                ctx.invoke(f, **kw)
            except SystemExit as e:
                worst = max(worst, e.code if isinstance(e.code, int) else 1)
        if worst:
            sys.exit(worst)

    return run


def store_of(ctx: click.Context):
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


def open_cache(project, printer, cache_url, cache_mode, cache_auth, cache_ca, cache_insecure):
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



def required_cache(project, printer, cache_opts):
    cache = open_cache(project, printer, **cache_opts)
    if cache is None:
        raise UserError("no cache given: --cache REF, $LXCLAYER_CACHE, or [cache] url in lxclayer.toml")
    cache.required = True  # its faults end the command in one line, not a "building without it"
    return cache



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


def printer_for(ctx: click.Context, project, *, quiet: bool = False) -> Printer:
    """The events object of a build run by a command with `progress_options`: its console
    renders as `--progress` says and logs to `--log` or STORE/logs/."""
    from ..progress import Console, Reporter, log_path

    if ctx.obj.get("console") is not None:  # a second build in one command (verify --repair --rebuild)
        return Reporter(ctx.obj["console"])  # type: ignore[return-value]
    mode, verbose, log_file = ctx.obj.get("progress", ("auto", False, None))
    if quiet and mode == "auto":
        mode = "quiet"  # --json: the report on stdout, only warnings on stderr
    logs = store_of(ctx).logs_dir()
    console = Console("plain" if mode == "quiet" else mode, verbose=verbose, quiet=mode == "quiet",
                      log=log_file or (lambda: log_path(logs, project.template.name)))
    ctx.obj["console"] = console
    return Reporter(console)  # type: ignore[return-value]


def build_mode(locked: bool, frozen: bool):
    from ..build import Mode

    if locked and frozen:
        raise click.UsageError("--locked and --frozen exclude each other")
    return Mode.LOCKED if locked else Mode.FROZEN if frozen else Mode.NORMAL


SNAPSHOTS_OPTION = click.option(
    "--snapshots", "snaps", type=click.Choice(["on", "off"]), default=None,
    help="Build program layers on overlay snapshots of the layers below (default: on, or $LXCLAYER_SNAPSHOTS);"
         " off: on a full copy of them, for file systems without overlayfs.")


def snapshots_on(snaps: str | None) -> bool | None:
    return None if snaps is None else snaps == "on"

