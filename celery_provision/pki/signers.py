"""The Celery signer store (`security_cert_store`): exactly the current, unrevoked signing certificates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..files import private_dir, write_atomic
from .state import State, host_revocations, revoked_serials

if TYPE_CHECKING:
    from ..model import Deployment

__all__ = ["sync_signers"]


def sync_signers(d: Deployment, state: State) -> None:
    """Make the cert store hold exactly the current, unrevoked signing certificates (none of a
    revoked host's, whatever its record says)."""
    layout = d.layout
    if not layout.signers_dir.exists():
        return
    revoked = revoked_serials(state)
    barred = host_revocations(state)
    for path in layout.signers_dir.glob("*.pem"):
        host = path.stem
        entry = state["leaves"].get(f"{host}/signing")
        if host not in d.hosts or host in barred or entry is None or entry["serial"] in revoked:
            path.unlink()
            continue
        cert_file = layout.cert(host, "signing")
        if cert_file.exists() and path.read_bytes() != cert_file.read_bytes():
            write_atomic(path, cert_file.read_bytes(), 0o644)
    for name, entry in state["leaves"].items():
        host, kind = name.split("/")
        if kind == "signing" and host in d.hosts and host not in barred and entry["serial"] not in revoked:
            target, source = layout.signer(host), layout.cert(host, "signing")
            if source.exists() and not target.exists():
                private_dir(layout.signers_dir)
                write_atomic(target, source.read_bytes(), 0o644)
