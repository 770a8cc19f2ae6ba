"""The certificate revocation list: published by the issuing CA, checked for freshness and signature."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..files import write_atomic
from ..layout import Layout
from .ca import CA
from .certs import SKEW, now
from .keys import hash_for
from .report import Report
from .state import State

if TYPE_CHECKING:
    from ..model import Deployment

__all__ = ["ensure_crl", "crl_problems"]


def ensure_crl(d: Deployment, ca: CA, state: State, report: Report, *, force: bool = False) -> None:
    """Write the CRL when it is missing, stale, about to expire, or from another issuer."""
    layout = d.layout
    start = now()
    revoked = [r for r in state["revoked"] if r.get("issuer") == ca.issuer_id
               and dt.datetime.fromisoformat(r["not_after"]) > start]
    wanted = sorted(r["serial"] for r in revoked)
    if not force and layout.crl_pem.exists():
        try:
            crl = x509.load_pem_x509_crl(layout.crl_pem.read_bytes())
            current = sorted(format(r.serial_number, "x") for r in crl)
            fresh = crl.next_update_utc and crl.next_update_utc - start > dt.timedelta(days=d.settings.crl_days / 3)
            if current == wanted and fresh and crl.issuer == ca.issuer_cert.subject and crl.is_signature_valid(
                ca.issuer_cert.public_key()  # type: ignore[arg-type]
            ):
                return
        except ValueError:
            pass
    key = ca.issuer_key()
    state["crl_number"] = int(state["crl_number"]) + 1
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.issuer_cert.subject)
        .last_update(start - SKEW)
        .next_update(start + dt.timedelta(days=d.settings.crl_days))
        .add_extension(x509.CRLNumber(state["crl_number"]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    )
    for r in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(r["serial"], 16))
            .revocation_date(dt.datetime.fromisoformat(r["date"]))
            .build()
        )
    write_atomic(layout.crl_pem, builder.sign(key, hash_for(key)).public_bytes(serialization.Encoding.PEM), 0o644)
    report.add("crl", "crl", f"{len(revoked)} revoked")


def crl_problems(layout: Layout, issuer: x509.Certificate, at: dt.datetime) -> list[str]:
    """What is wrong with the CRL on disk at time *at* (expired, unsigned, unreadable); [] if none."""
    if not layout.crl_pem.exists():
        return []
    problems = []
    try:
        crl = x509.load_pem_x509_crl(layout.crl_pem.read_bytes())
        if crl.next_update_utc and crl.next_update_utc <= at:
            problems.append(f"{layout.crl_pem}: CRL expired")
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            problems.append(f"{layout.crl_pem}: CRL not signed by the issuing CA")
    except ValueError:
        problems.append(f"{layout.crl_pem}: CRL unreadable")
    return problems
