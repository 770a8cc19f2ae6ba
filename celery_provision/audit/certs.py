"""Certificate and key files as the signing checks need them (``cryptography`` loaded lazily)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the module loads cryptography on first use, not on import
    from cryptography import x509

__all__ = ["celery_cert_id", "expired", "is_rsa", "key_matches", "load_cert"]


def load_cert(path: str) -> x509.Certificate | None:
    """The PEM certificate at PATH, or None when it is unreadable or not a certificate."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError):
        return None


def is_rsa(cert: x509.Certificate) -> bool:
    """Whether CERT has an RSA key (the only kind Celery signing supports)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return isinstance(cert.public_key(), rsa.RSAPublicKey)


def expired(cert: x509.Certificate) -> bool:
    """Whether CERT is past its notAfter."""
    return datetime.datetime.now(datetime.UTC) >= cert.not_valid_after_utc


def celery_cert_id(cert: x509.Certificate) -> str:
    """The id Celery's CertStore keys certificates by (issuer values + serial)."""
    return f"{' '.join(str(a.value) for a in cert.issuer)} {cert.serial_number}"


def key_matches(key_path: str, cert: x509.Certificate, password: object) -> bool:
    """Whether the key at KEY_PATH belongs to CERT (True when the key cannot be read here)."""
    from cryptography.hazmat.primitives import serialization

    try:
        pw = password.encode() if isinstance(password, str) else password
        key = serialization.load_pem_private_key(
            Path(key_path).read_bytes(), password=pw if isinstance(pw, bytes) and pw else None
        )
    except (OSError, ValueError, TypeError):
        return True  # unreadable or encrypted without a password here: not this rule's business
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)
