"""`check` (an archive or image, and its signatures) and `boot-test`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import msgspec

from ..errors import UserError
from .options import per_template, printer_for, progress_options, project_of


@click.command()
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

        verdicts = verify.check_signatures(archive, key_file, pgp_cert)
        for v in verdicts:
            click.echo(f"{archive}: {'signature ok' if v.ok else 'signature BAD'}: {v.what}", err=True)
        bad_sig = not all(v.ok for v in verdicts)
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


@click.command("boot-test")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--timeout", type=float, default=600, show_default=True,
              help="Seconds to wait for the container to boot and for each phase.")
@click.option("--no-reboot", is_flag=True, help="Do not reboot the container and check again.")
@click.option("--no-network", is_flag=True, help="Loopback only: no veth, bridge or DHCP.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@per_template
@progress_options
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

    project = project_of(ctx)
    tpl = project.template
    if archive is None:
        from ..outputs import exporter

        archive = project.root / "dist" / exporter(tpl.formats[0]).filename(tpl)
        if not archive.exists():
            raise UserError(f"{archive} does not exist: run `lxclayer build` first, or name an archive")
    printer = printer_for(ctx, project, quiet=as_json)
    report = run_boot_test(archive, list(tpl.checks), list(tpl.faults), timeout=timeout,
                           reboot=not no_reboot, network=not no_network, progress=printer.step)
    if as_json:
        click.echo(report.to_json().decode())
    else:
        click.echo(report.to_table())
    sys.exit(0 if report.ok else 1)
