"""`push` (the image to a registry), `publish` (the signed channel), `key generate`."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from ..progress import Printer
from .options import per_template, printer_for, progress_options, project_of, store_of


@click.command()
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

    project = project_of(ctx)
    res = run_push(project, store_of(ctx), reference, auth_file=auth_file, ca_file=ca_file,
                   insecure=insecure, events=printer_for(ctx, project, quiet=as_json), sign_key=sign_key,
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


@click.command()
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
    first = project_of(ctx)
    chosen = list(first.templates) if all_templates else list(dict.fromkeys(names)) or [first.template.name]
    projects = [first if n == first.template.name else load_project(root=first.root, template=n) for n in chosen]
    printer = Printer()
    res = run_publish(projects, folder, pgp_key, maintainer=maintainer or DEFAULT_MAINTAINER,
                      infopage=infopage or DEFAULT_INFOPAGE, warn=printer.warn)
    click.echo(f"published {', '.join(res.templates)} to {res.folder} ({len(res.files)} files)")


@click.group("key")
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
