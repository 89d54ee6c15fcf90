"""The `lxclayer` command: a thin layer over the library API.

Errors a user can cause print one line (`lxclayer: error: FILE: key KEY: reason`) and exit
with code 2; nothing a user can cause prints a traceback.

The package: this module has the `lxclayer` group, its global options and `main` (how errors
end the process); `options.py` what the commands share (the project, the store, `--template`/
`--all`, the cache's and `--progress` options); `report.py` how results are printed; the commands
in `build.py` (build, plan, lock, outdated), `store.py` (gc, verify), `cache.py` (cache push/ls),
`check.py` (check, boot-test) and `publish.py` (push, publish, key). Every command imports the
library it calls inside its body, so that `lxclayer build` on a no-op loads only what it needs.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import click

from ..errors import UserError
from . import build, cache, check, publish, store


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



for _command in (build.build, build.plan, build.lock, build.outdated, check.check, check.boot_test, store.gc,
                 store.verify, publish.push, publish.publish, publish.key_group, cache.cache_group):
    cli.add_command(_command)


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
