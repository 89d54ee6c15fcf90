"""Trust: what lets a Proxmox node (or anyone) tell our images and archives from others'.

- :mod:`.keys`: ECDSA P-256 signing keys (PKCS#8 PEM), loaded with the `cryptography` library;
- :mod:`.sigstore`: sigstore "simple signing" signatures of images, stored as the attachment
  skopeo and cosign read (tag `sha256-<hex>.sig`);
- :mod:`.dsse`: DSSE envelopes (the signed form of the in-toto provenance statement);
- :mod:`.pgp`: detached OpenPGP signatures made with Debian's `sq` and checked with `sqv`.
"""
