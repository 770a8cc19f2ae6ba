"""The signer store (`signers/<host>.pem`): each trusted host's current signing certificate,
followed, for the overlap window after a rotation, by the one it replaced."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from ..files import private_dir, write_atomic
from ..layout import Layout
from .certs import now as clock
from .report import Report
from .state import State, host_revocations, revoked_serials

if TYPE_CHECKING:
    from ..model import Deployment

__all__ = ["retired_signer", "sync_signers"]


def retired_signer(layout: Layout, state: State, name: str, at: dt.datetime) -> dict[str, Any] | None:
    """The `previous` record of signing leaf *name*, about to be replaced at *at*: its certificate
    on disk, if it is the one state.json recorded and it is not revoked; else None."""
    entry = state["leaves"].get(name)
    host = name.split("/")[0]
    try:
        pem = layout.cert(host, "signing").read_bytes()
        cert = x509.load_pem_x509_certificates(pem)[0]
    except (OSError, ValueError):
        return None
    serial = format(cert.serial_number, "x")
    if entry is None or entry["serial"] != serial or serial in revoked_serials(state):
        return None
    return {"pem": pem.decode(), "serial": serial, "not_after": cert.not_valid_after_utc.isoformat(),
            "replaced_at": at.isoformat()}


def _overlap(entry: dict[str, Any], revoked: set[str], now: dt.datetime,
             window: dt.timedelta) -> tuple[bytes, str | None]:
    """The previous certificate of a signing record while it is still to be trusted (inside the
    window since it was replaced, unexpired, unrevoked), else nothing and why the record forgot it."""
    previous = entry.get("previous")
    if previous is None:
        return b"", None
    why = ("revoked" if previous["serial"] in revoked
           else "expired" if dt.datetime.fromisoformat(previous["not_after"]) <= now
           else "overlap window over" if dt.datetime.fromisoformat(previous["replaced_at"]) + window <= now
           else None)
    if why is not None:
        del entry["previous"]
        return b"", why
    return str(previous["pem"]).encode(), None


def _holds(path: Path, data: bytes) -> bool:
    """Whether the file at *path* exists and holds exactly *data*."""
    try:
        return path.read_bytes() == data
    except FileNotFoundError:
        return False


def sync_signers(d: Deployment, state: State, *, now: dt.datetime | None = None,
                 report: Report | None = None) -> None:
    """Make the store hold exactly the current, unrevoked signing certificates (none of a revoked
    host's, whatever its record says), each followed by the certificate it replaced while that
    is inside `signing_overlap_hours` (by *now*, default the clock), unexpired and unrevoked.

    A previous certificate past that is forgotten, and reported as `retired`. A host whose
    signing certificate file is missing keeps its store file as it is (the next `issue`
    replaces both)."""
    layout = d.layout
    now = now or clock()
    window = dt.timedelta(hours=d.settings.signing_overlap_hours)
    revoked = revoked_serials(state)
    barred = host_revocations(state)
    wanted: dict[str, bytes | None] = {}
    for name, entry in state["leaves"].items():
        host, kind = name.split("/")
        if kind != "signing" or host not in d.hosts or host in barred or entry["serial"] in revoked:
            continue
        try:  # one open per file, no stat before it: 10,000 workers, 20,000 files
            current = layout.cert(host, "signing").read_bytes()
        except FileNotFoundError:
            wanted[host] = None
            continue
        serial = entry.get("previous", {}).get("serial")
        previous, why = _overlap(entry, revoked, now, window)
        if why and report is not None:
            report.add("retired", name, f"previous certificate {serial} left the signer store ({why})")
        wanted[host] = current + previous
    if layout.signers_dir.exists():
        for path in layout.signers_dir.glob("*.pem"):
            if path.stem not in wanted:
                path.unlink()
    for host, data in wanted.items():
        target = layout.signer(host)
        if data is None or _holds(target, data):
            continue
        private_dir(layout.signers_dir)
        write_atomic(target, data, 0o644)
