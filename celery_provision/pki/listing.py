"""Looking at the PKI on disk: one row per certificate (`certs list`), every problem (`certs check`),
the revoked hosts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from ..errors import ProvisionError
from ..layout import KINDS
from .ca import Issuer
from .certs import issued_by, load_cert, now
from .crl import crl_problems
from .judge import ca_mode_problems, judge
from .keys import key_type_of
from .leaves import leaf_specs
from .state import host_revocations, load_state, revoked_serials

if TYPE_CHECKING:
    from ..model import Deployment

__all__ = ["inventory_rows", "check", "revoked_hosts"]


def _cert_row(name: str, kind: str, path: Path, revoked: set[str], at: dt.datetime,
              expected: bool) -> dict[str, Any]:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return {"name": name, "kind": kind, "key_type": "?", "sans": [], "not_after": None,
                "days_left": None, "status": "unreadable", "path": str(path)}
    try:
        sans = [str(n.value) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
    except x509.ExtensionNotFound:
        sans = []
    left = (cert.not_valid_after_utc - at).days
    serial = format(cert.serial_number, "x")
    if serial in revoked:
        status = "revoked"
    elif cert.not_valid_after_utc <= at:
        status = "expired"
    elif not expected:
        status = "not in inventory"
    elif left < 30:
        status = "expiring"
    else:
        status = "ok"
    return {"name": name, "kind": kind, "key_type": key_type_of(cert.public_key()), "sans": sans,
            "not_after": cert.not_valid_after_utc.isoformat(), "days_left": left, "status": status,
            "serial": serial, "path": str(path)}


def inventory_rows(d: Deployment) -> list[dict[str, Any]]:
    """One row per certificate on disk: name, kind, key type, SANs, expiry, days left, status."""
    layout = d.layout
    state = load_state(layout)
    revoked = revoked_serials(state)
    at = now()
    rows = []
    for label, path in (("root", layout.root_cert), ("intermediate", layout.intermediate_cert)):
        if path.exists():
            rows.append(_cert_row(f"ca/{label}", "ca", path, revoked, at, True))
    specs = leaf_specs(d)
    wanted = {s.name for s in specs}
    barred = host_revocations(state)
    if layout.hosts_dir.exists():
        for host_dir in sorted(layout.hosts_dir.iterdir()):
            for kind in KINDS:
                path = host_dir / f"{kind}.pem"
                if path.exists():
                    row = _cert_row(host_dir.name, kind, path, revoked, at, f"{host_dir.name}/{kind}" in wanted)
                    if host_dir.name in barred:
                        row["status"] = "revoked"
                    rows.append(row)
    shown = {(r["name"], r["kind"]) for r in rows}
    for spec in specs:  # a revoked host is revoked, not missing, even without its files
        if spec.host in barred and (spec.host, spec.kind) not in shown:
            rows.append({"name": spec.host, "kind": spec.kind, "key_type": "-", "sans": [], "not_after": None,
                         "days_left": None, "status": "revoked", "path": str(layout.cert(spec.host, spec.kind))})
    return rows


def revoked_hosts(d: Deployment) -> dict[str, dict[str, str]]:
    """The hosts revoked as a whole (host -> `{date, reason}`), in inventory order first: `issue`
    skips them, `export` removes their broker users, `verify` shows their old files refused."""
    barred = host_revocations(load_state(d.layout))
    order = {name: i for i, name in enumerate(d.hosts)}
    return {h: barred[h] for h in sorted(barred, key=lambda h: (order.get(h, len(order)), h))}


def check(d: Deployment) -> list[str]:
    """Every problem with the PKI on disk (chains, key pairs, expiry, permissions); [] if none.

    Each leaf is judged by `judge.judge` from its files alone (state.json is not trusted), so
    what `issue` would fix is exactly what this reports.
    """
    layout = d.layout
    if not layout.root_cert.exists():
        return [f"{layout.root_cert}: no CA (run `celery-provision certs issue`)"]
    state = load_state(layout)
    revoked = revoked_serials(state)
    at = now()
    problems = [str(p) for p in ca_mode_problems(layout)]
    try:
        root = load_cert(layout.root_cert, "CA certificate")
    except ProvisionError as exc:
        return [str(exc)]
    if root.not_valid_after_utc <= at:
        problems.append(f"{layout.root_cert}: CA expired on {root.not_valid_after_utc:%Y-%m-%d}")
    issuer = root
    if layout.intermediate_cert.exists():
        try:
            issuer = load_cert(layout.intermediate_cert, "intermediate CA certificate")
        except ProvisionError as exc:
            problems.append(str(exc))
        if not issued_by(issuer, root):
            problems.append(f"{layout.intermediate_cert}: not issued by the root CA")
    signer = Issuer.of(issuer)
    barred = host_revocations(state)
    for spec in leaf_specs(d):
        if spec.host in barred:  # revoked on purpose: only its certificates' revocation is checked
            problems.extend(_unrevoked(layout.cert(spec.host, spec.kind), revoked))
            continue
        verdict = judge(spec, layout, signer, state, now=at, revoked=revoked, trust_record=False)
        problems.extend(str(p) for p in verdict.problems)
    problems.extend(crl_problems(layout, issuer, at))
    return list(dict.fromkeys(problems))  # a host directory is judged once per leaf in it


def _unrevoked(path: Path, revoked: set[str]) -> list[str]:
    """A revoked host's certificate that is not revoked (put back by hand?); [] if none."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        return [f"{path}: unreadable"]
    if format(cert.serial_number, "x") in revoked:
        return []
    return [f"{path}: the host is revoked but this certificate is not on the CRL"]
