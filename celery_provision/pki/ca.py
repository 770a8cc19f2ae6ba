"""The certificate authority: a root, optionally an intermediate below it; built, ensured, loaded."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509

from ..errors import ProvisionError
from ..files import private_dir, write_atomic
from ..layout import Layout
from .certs import SKEW, cert_pem, issued_by, load_cert, name, now
from .keys import Key, generate_key, hash_for, key_pem, load_key, same_key
from .report import Report

if TYPE_CHECKING:
    from ..model import Deployment

__all__ = ["CA", "Issuer", "ensure_ca", "ensure_intermediate"]


@dataclass(frozen=True)
class Issuer:
    """The certificate that signs the leaves, and the short digest state.json records it by."""

    cert: x509.Certificate
    id: str

    @classmethod
    def of(cls, cert: x509.Certificate) -> Issuer:
        """The issuer *cert*, with its id computed."""
        return cls(cert, hashlib.sha256(cert_pem(cert)).hexdigest()[:32])


@dataclass
class CA:
    """The loaded CA: certificates always, private keys only when something must be signed."""

    layout: Layout
    passphrase: bytes | None
    root: x509.Certificate
    intermediate: x509.Certificate | None
    _key: Key | None = None
    _issuer: Issuer | None = None

    @property
    def issuer_cert(self) -> x509.Certificate:
        """The certificate leaves are signed under: the intermediate when there is one."""
        return self.intermediate or self.root

    @property
    def issuer(self) -> Issuer:
        """The issuing certificate with its id (computed once: it is asked once per leaf)."""
        if self._issuer is None:
            self._issuer = Issuer.of(self.issuer_cert)
        return self._issuer

    @property
    def issuer_id(self) -> str:
        """The id state.json records leaves' issuer by."""
        return self.issuer.id

    def issuer_key(self) -> Key:
        """The issuing private key, loaded (and checked against its certificate) on first use."""
        if self._key is None:
            path = self.layout.intermediate_key if self.intermediate else self.layout.root_key
            key = load_key(path, "CA private key", self.passphrase)
            if not same_key(self.issuer_cert, key):
                raise ProvisionError("CA private key does not match its certificate", where=str(path))
            self._key = key
        return self._key

    def chain(self) -> bytes:
        """What follows a leaf in its PEM file: the intermediate, when there is one."""
        return cert_pem(self.intermediate) if self.intermediate else b""


def _build_ca(
    key: Key, subject: x509.Name, days: int, *, issuer: tuple[x509.Certificate, Key] | None, path_length: int
) -> x509.Certificate:
    start = now()
    issuer_name = issuer[0].subject if issuer else subject
    signer = issuer[1] if issuer else key
    not_after = start + dt.timedelta(days=days)
    if issuer:
        not_after = min(not_after, issuer[0].not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    )
    return builder.sign(signer, hash_for(signer))


def ensure_ca(d: Deployment, passphrase: bytes | None, report: Report, *, force: bool) -> CA:
    """Load the CA, creating it when (and only when) none exists."""
    s, layout = d.settings, d.layout
    has_cert, has_key = layout.root_cert.exists(), layout.root_key.exists()
    if force and (has_cert or has_key):
        retired = layout.ca_dir.with_name(f"ca.retired-{now():%Y%m%dT%H%M%S}")
        layout.ca_dir.rename(retired)
        report.add("retired", "ca", f"previous CA moved to {retired}")
        has_cert = has_key = False
    if has_cert != has_key:
        missing = layout.root_key if has_cert else layout.root_cert
        raise ProvisionError("CA is incomplete (certificate or key missing); refusing to replace it", where=str(missing))
    private_dir(layout.ca_dir)
    if not has_cert:
        key = generate_key(s.key_type)
        cert = _build_ca(key, name(f"celery-provision root CA {d.inventory.name}"), s.ca_days, issuer=None,
                         path_length=1 if s.intermediate_ca else 0)
        write_atomic(layout.root_key, key_pem(key, passphrase), 0o600)
        write_atomic(layout.root_cert, cert_pem(cert), 0o644)
        report.add("issued", "ca/root", "root CA")
    root = load_cert(layout.root_cert, "CA certificate")
    if not root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
        raise ProvisionError("CA certificate is not a CA", where=str(layout.root_cert))
    intermediate = None
    if s.intermediate_ca:
        intermediate = ensure_intermediate(d, root, passphrase, report)
    if not layout.ca_pem.exists() or layout.ca_pem.read_bytes() != cert_pem(root):
        # Publish a changed root only if it is the one whose key we hold (a replaced root.pem
        # must fail before anything is written).
        if not same_key(root, load_key(layout.root_key, "CA private key", passphrase)):
            raise ProvisionError("CA private key does not match its certificate", where=str(layout.root_key))
        write_atomic(layout.ca_pem, cert_pem(root), 0o644)
    return CA(layout, passphrase, root, intermediate)


def ensure_intermediate(
    d: Deployment, root: x509.Certificate, passphrase: bytes | None, report: Report,
    *, renew_within: dt.timedelta | None = None,
) -> x509.Certificate:
    """The intermediate CA under *root*: kept while valid (beyond *renew_within*), else replaced."""
    layout = d.layout
    if layout.intermediate_cert.exists() and layout.intermediate_key.exists():
        cert = load_cert(layout.intermediate_cert, "intermediate CA certificate")
        if issued_by(cert, root) and cert.not_valid_after_utc > now() + (renew_within or dt.timedelta(0)):
            return cert
    root_key = load_key(layout.root_key, "CA private key", passphrase)
    if not same_key(root, root_key):
        raise ProvisionError("CA private key does not match its certificate", where=str(layout.root_key))
    key = generate_key(d.settings.key_type)
    cert = _build_ca(key, name(f"celery-provision intermediate CA {d.inventory.name}"), d.settings.ca_days,
                     issuer=(root, root_key), path_length=0)
    write_atomic(layout.intermediate_key, key_pem(key, passphrase), 0o600)
    write_atomic(layout.intermediate_cert, cert_pem(cert), 0o644)
    report.add("issued", "ca/intermediate", "intermediate CA")
    return cert
