"""Certificate helpers shared by the CA and the leaves: the clock, names, PEM, loading, chain checks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import ProvisionError
from ..files import read_bytes

__all__ = ["SKEW", "EKU", "now", "name", "cert_pem", "load_cert", "issued_by"]

#: How far `not_valid_before` is backdated, for clocks that run a little behind.
SKEW = dt.timedelta(minutes=5)

#: The extended key usages a leaf may carry, by the names the inventory uses.
EKU = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
}


def now() -> dt.datetime:
    """The current time in UTC, to the second (what a certificate can hold)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def name(cn: str, org: str = "celery-provision") -> x509.Name:
    """A subject of our organisation with common name *cn*."""
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def cert_pem(cert: x509.Certificate) -> bytes:
    """The PEM encoding of *cert*."""
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(path: Path, what: str) -> x509.Certificate:
    """The certificate at *path*, every failure one readable line naming the file."""
    data = read_bytes(path, what)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ProvisionError(f"{what} is corrupted (not a PEM certificate)", where=str(path)) from None


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether *issuer* directly signed *cert* (names and signature)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
