"""`cache push` and `cache ls`: the shared layer cache (docs/cache.md)."""

from __future__ import annotations

import sys

import click

from ..errors import UserError
from ..progress import Printer
from .options import cache_options, project_of, required_cache, store_of


@click.group("cache")
def cache_group() -> None:
    """The shared layer cache on an OCI registry (docs/cache.md)."""


def _cache_locks(ctx, all_roots: bool):
    """(name, lockfile) pairs: every lock in the project's locks/, or with --all every live GC
    root's (every project that builds into this store)."""
    from ..lock import toml as locktoml

    project = project_of(ctx)
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
    for root in store_of(ctx).roots():
        if root.live:
            lock = locktoml.read(root.lock_file)
            if lock is not None:
                found.append((f"{lock.template.name} ({root.lock_file})", lock))
    return project, found



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
    cache = required_cache(project, printer, cache_opts)
    incomplete = _push_artifacts(cache, locks, store_of(ctx)) if artifacts_too else 0
    store = store_of(ctx)
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
    cache = required_cache(project, Printer(), cache_opts)
    try:
        for name, lock in locks:
            st = status(cache, lock)
            click.echo(f"{name}: {sum(s.cached for s in st)} of {len(st)} layers in {cache.where}")
            for s in st:
                click.echo(f"  {'cached ' if s.cached else 'missing'}  {s.name}  {s.input}")
    finally:
        cache.close()
