"""Private keys: the key types we issue, generation, PEM encoding, loading and the CA passphrase."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..errors import ProvisionError
from ..files import read_bytes

if TYPE_CHECKING:
    from ..model import Deployment

__all__ = [
    "Key",
    "generate_key",
    "key_type_of",
    "hash_for",
    "key_pem",
    "same_key",
    "load_key",
    "parse_key",
    "passphrase_for",
]

#: A private key we issue: EC or RSA for TLS and the CA, also Ed25519 for message signing.
Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def generate_key(key_type: str) -> Key:
    """A new private key of *key_type*, one of `model.KEY_TYPES` or `model.SIGNING_KEY_TYPES`."""
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa2048", "rsa3072", "rsa4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    raise ProvisionError(f"unknown key type {key_type!r}")


def key_type_of(public_key: Any) -> str:
    """The key type name of a public key, e.g. `ec-p256`."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(public_key.curve.name, public_key.curve.name)
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa{public_key.key_size}"
    return type(public_key).__name__


def hash_for(key: Key) -> hashes.SHA256 | hashes.SHA384 | None:
    """The digest a signature by *key* uses: none for Ed25519 (it hashes internally), SHA-384 for
    P-384 and up, else SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def key_pem(key: Key, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM of *key*, encrypted when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def same_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """Whether *cert* carries the public half of *key*."""
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return cert.public_key().public_bytes(enc, pub) == key.public_key().public_bytes(enc, pub)


def parse_key(data: bytes) -> PrivateKeyTypes:
    """An unencrypted private key from PEM; ValueError or TypeError when it is not one."""
    return serialization.load_pem_private_key(data, password=None)


def load_key(path: Path, what: str, passphrase: bytes | None) -> Key:
    """A CA private key from *path*, every failure one readable line naming the file."""
    data = read_bytes(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        if passphrase:
            raise ProvisionError(f"{what} is not encrypted but a passphrase was given", where=str(path)) from None
        raise ProvisionError(
            f"{what} is encrypted: set its passphrase (celery_provision_ca_passphrase_env or "
            "_file, or CELERY_PROVISION_CA_PASSPHRASE)",
            where=str(path),
        ) from None
    except ValueError as exc:
        if b"ENCRYPTED" in data and passphrase:
            raise ProvisionError(f"wrong passphrase for {what}", where=str(path)) from None
        raise ProvisionError(f"{what} is corrupted ({exc})", where=str(path)) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ProvisionError(f"{what} has an unsupported key type", where=str(path))
    return key


def passphrase_for(d: Deployment) -> bytes | None:
    """The CA key passphrase from the configured environment variable or file, if any."""
    s = d.settings
    if s.ca_passphrase_env:
        value = os.environ.get(s.ca_passphrase_env)
        if value is None:
            raise ProvisionError(
                f"the CA passphrase variable {s.ca_passphrase_env} is not set in the environment",
                where="celery_provision_ca_passphrase_env",
            )
        if not value:
            raise ProvisionError(f"the CA passphrase variable {s.ca_passphrase_env} is empty")
        return value.encode()
    if s.ca_passphrase_file:
        path = Path(s.ca_passphrase_file).expanduser()
        if not path.is_absolute():
            path = d.inventory_dir / path
        data = read_bytes(path, "CA passphrase file").rstrip(b"\r\n")
        if not data:
            raise ProvisionError("CA passphrase file is empty", where=str(path))
        return data
    value = os.environ.get("CELERY_PROVISION_CA_PASSPHRASE")
    return value.encode() if value else None
