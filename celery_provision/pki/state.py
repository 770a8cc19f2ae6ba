"""state.json: what was issued (serials, digests, issuer), what was revoked (certificates and
whole hosts), the CRL number."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cryptography import x509

from ..errors import ProvisionError
from ..files import write_atomic
from ..layout import Layout
from .certs import now

__all__ = ["State", "load_state", "read_state", "save_state", "dump_state", "digest", "record", "revoked_serials",
           "revoke_leaf", "host_revocations", "revoke_host", "readmit_host"]

#: The parsed state.json: `leaves` (name -> record), `revoked` (entries), `crl_number`, and
#: `revoked_hosts` (host -> {date, reason}; absent until a first host is revoked, so an older
#: state.json is not rewritten by a run that changes nothing).
State = dict[str, Any]


def load_state(layout: Layout) -> State:
    """The state of the PKI at *layout*, or an empty one when there is none yet."""
    return read_state(layout)[0]


def read_state(layout: Layout) -> tuple[State, str]:
    """The state of the PKI at *layout* and the text it was read from ("" when there is none)."""
    try:
        text = layout.state.read_text()
        data = json.loads(text)
    except FileNotFoundError:
        return {"version": 1, "leaves": {}, "revoked": [], "crl_number": 0}, ""
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"PKI state file is unreadable or corrupted ({exc})", where=str(layout.state)) from None
    data.setdefault("leaves", {})
    data.setdefault("revoked", [])
    data.setdefault("crl_number", 0)
    return data, text


def dump_state(state: State) -> str:
    """The canonical text of *state*, as written to state.json."""
    return json.dumps(state, indent=1, sort_keys=True)


def save_state(layout: Layout, state: State, original: str) -> None:
    """Write *state* unless it still says what *original*, the text it was read from, says (so a
    no-op run writes nothing, and encodes nothing: comparing parsed values costs a fraction of
    encoding 20,000 records with indentation)."""
    if original and json.loads(original) == state:
        return
    write_atomic(layout.state, dump_state(state).encode(), 0o600)


def digest(data: bytes) -> str:
    """The short digest state.json records a file's bytes by."""
    return hashlib.sha256(data).hexdigest()[:32]


def record(fingerprint: str, cert: x509.Certificate, cert_bytes: bytes, key_bytes: bytes,
           issuer_id: str) -> dict[str, Any]:
    """The state record of one leaf: serial, expiry, what it was issued for and by, file digests."""
    return {
        "serial": format(cert.serial_number, "x"),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "spec": fingerprint,
        "issuer": issuer_id,
        "cert": digest(cert_bytes),
        "key": digest(key_bytes),
    }


def revoked_serials(state: State) -> set[str]:
    """The serials (hex) of every revoked certificate."""
    return {r["serial"] for r in state["revoked"]}


def revoke_leaf(state: State, name: str, reason: str) -> bool:
    """Add leaf *name* to the revocations; False if it has no record or is revoked already."""
    entry = state["leaves"].get(name)
    if entry is None or entry["serial"] in revoked_serials(state):
        return False
    state["revoked"].append({
        "serial": entry["serial"], "name": name, "date": now().isoformat(), "reason": reason,
        "issuer": entry["issuer"], "not_after": entry["not_after"],
    })
    return True


def host_revocations(state: State) -> dict[str, dict[str, str]]:
    """The hosts revoked as a whole (host -> `{date, reason}`): nothing is issued to them until
    they are re-admitted."""
    return dict(state.get("revoked_hosts", {}))


def revoke_host(state: State, host: str, reason: str) -> bool:
    """Record *host* as revoked as a whole; False if it is already."""
    hosts = state.setdefault("revoked_hosts", {})
    if host in hosts:
        return False
    hosts[host] = {"date": now().isoformat(), "reason": reason}
    return True


def readmit_host(state: State, host: str) -> None:
    """Forget that *host* was revoked (its revoked certificates stay in `revoked`, and on the CRL)."""
    hosts = state.get("revoked_hosts", {})
    hosts.pop(host, None)
    if not hosts:
        state.pop("revoked_hosts", None)
