"""Signing keys: ECDSA P-256, the key type sigstore's simple signing and cosign use.

A private key is a PKCS#8 PEM file, encrypted or not, as `openssl genpkey -algorithm EC -pkeyopt
ec_paramgen_curve:P-256 [-aes256]` writes it (a traditional `EC PRIVATE KEY` PEM is read too).
A public key is a SubjectPublicKeyInfo PEM (`openssl pkey -pubout`), what skopeo's `keyPath`
and `cosign verify --key` read.

No message here ever holds key material or a passphrase: errors name the file and the reason.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..fsio import atomic_write

PASSPHRASE_ENV = "LXCLAYER_SIGN_PASSPHRASE_FILE"
MAX_KEY_FILE = 64 * 1024


class KeyError_(UserError):
    """A key file is unreadable, of the wrong type, or its passphrase is wrong."""


def _crypto():
    # cryptography loads only when a key is used: a build without signing never imports it.
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return InvalidSignature, UnsupportedAlgorithm, hashes, serialization, ec


def _ecdsa():
    _, _, hashes, _, ec = _crypto()
    try:  # RFC 6979: the same key and payload give the same signature (reproducible envelopes)
        return ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    except TypeError:  # cryptography older than 44
        return ec.ECDSA(hashes.SHA256())


def _read_small(path: Path, what: str) -> bytes:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise KeyError_(f"{what} is not a regular file", file=str(path))
        if st.st_size > MAX_KEY_FILE:
            raise KeyError_(f"{what} is {st.st_size} bytes, too large for a key", file=str(path))
        return path.read_bytes()
    except OSError as e:
        raise KeyError_(f"cannot read the {what}: {e.strerror or e}", file=str(path)) from None


@dataclass
class SigningKey:
    path: Path
    _key: object  # EllipticCurvePrivateKey; never printed (repr shows the path only)

    def __repr__(self) -> str:
        return f"SigningKey({str(self.path)!r})"

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 with SHA-256, ASN.1 DER: what cosign and containers/image verify."""
        return self._key.sign(data, _ecdsa())

    def public(self) -> PublicKey:
        return PublicKey(path=self.path, _key=self._key.public_key())


@dataclass
class PublicKey:
    path: Path | None
    _key: object

    def verify(self, signature: bytes, data: bytes) -> bool:
        InvalidSignature, _, _, _, _ = _crypto()
        try:
            self._key.verify(signature, data, _ecdsa())
            return True
        except (InvalidSignature, ValueError):
            return False

    def pem(self) -> bytes:
        _, _, _, serialization, _ = _crypto()
        return self._key.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)

    def keyid(self) -> str:
        """sha256 of the DER SubjectPublicKeyInfo: a name for the key in DSSE signatures."""
        import hashlib

        _, _, _, serialization, _ = _crypto()
        der = self._key.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)
        return "sha256:" + hashlib.sha256(der).hexdigest()


def _check_p256(key, path: Path, what: str) -> None:
    _, _, _, _, ec = _crypto()
    ok_types = (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)
    if not isinstance(key, ok_types):
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "").replace("PublicKey", "")
        raise KeyError_(f"{what} is of type {kind or 'non-EC'}; an ECDSA P-256 key is needed "
                        "(openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)", file=str(path))
    if key.curve.name != "secp256r1":
        raise KeyError_(f"{what} is an EC key on curve {key.curve.name}; P-256 (secp256r1) is needed",
                        file=str(path))


def passphrase(passphrase_file: str | os.PathLike | None) -> bytes | None:
    """The passphrase from `passphrase_file`, else from the file `$LXCLAYER_SIGN_PASSPHRASE_FILE`
    names; the first line, without its line end."""
    name = passphrase_file or os.environ.get(PASSPHRASE_ENV) or None
    if name is None:
        return None
    data = _read_small(Path(name), "passphrase file")
    return data.split(b"\n", 1)[0].rstrip(b"\r")


def load_private(path: str | os.PathLike, passphrase_file: str | os.PathLike | None = None,
                 warn: Callable[[str], None] | None = None) -> SigningKey:
    """The ECDSA P-256 private key in `path` (PKCS#8 PEM, encrypted or not). A key file that
    others may read is used, with a warning."""
    _, UnsupportedAlgorithm, _, serialization, _ = _crypto()
    path = Path(path)
    data = _read_small(path, "signing key")
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0
    if mode & 0o077 and warn is not None:
        warn(f"{path}: the signing key is readable by others (mode {stat.S_IMODE(mode):04o}); "
             f"chmod 600 {path}")
    pw = passphrase(passphrase_file)
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise KeyError_("not a PEM private key (expected PKCS#8 `BEGIN PRIVATE KEY` or "
                        "`BEGIN ENCRYPTED PRIVATE KEY`)", file=str(path))
    try:
        key = serialization.load_pem_private_key(data, password=pw)
    except TypeError:
        if pw is None:
            raise KeyError_("the signing key is encrypted: give its passphrase with "
                            f"--sign-passphrase-file or ${PASSPHRASE_ENV}", file=str(path)) from None
        key = serialization.load_pem_private_key(data, password=None)  # not encrypted: ignore pw
    except ValueError:
        raise KeyError_("cannot decrypt or read the signing key: wrong passphrase, or not a valid "
                        "PEM private key", file=str(path)) from None
    except UnsupportedAlgorithm:
        raise KeyError_("the signing key uses an algorithm this system cannot read", file=str(path)) from None
    _check_p256(key, path, "the signing key")
    return SigningKey(path=path, _key=key)


def load_public(path: str | os.PathLike) -> PublicKey:
    """The ECDSA P-256 public key in `path` (SubjectPublicKeyInfo PEM)."""
    _, UnsupportedAlgorithm, _, serialization, _ = _crypto()
    path = Path(path)
    data = _read_small(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyError_("not a PEM public key (expected `BEGIN PUBLIC KEY`, as "
                        "`openssl pkey -pubout` writes)", file=str(path)) from None
    _check_p256(key, path, "the public key")
    return PublicKey(path=path, _key=key)


def generate(path: str | os.PathLike, passphrase_file: str | os.PathLike | None = None,
             *, force: bool = False) -> tuple[Path, Path]:
    """Write a new key pair: `path` (PKCS#8 PEM, 0600; encrypted with AES-256 when a
    passphrase is given) and `path.pub` (SubjectPublicKeyInfo PEM). Refuses to overwrite."""
    _, _, _, serialization, ec = _crypto()
    path = Path(path)
    pub = path.with_name(path.name + ".pub")
    if not force:
        for p in (path, pub):
            if p.exists() or p.is_symlink():
                raise KeyError_("exists already; not overwritten (remove it, or choose another path)",
                                file=str(p))
    pw = passphrase(passphrase_file)
    key = ec.generate_private_key(ec.SECP256R1())
    enc = serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    atomic_write(path, private, mode=0o600, durable=True)
    atomic_write(pub, PublicKey(path=pub, _key=key.public_key()).pem(), mode=0o644, durable=True)
    return path, pub
