"""The judge: every problem of a leaf on disk, which `issue` fixes and `check` reports.

`issue` reissues a leaf whose verdict needs it and narrows widened modes in place; `check`
reports every problem. Both ask `judge`, so a PKI that `issue` leaves alone passes `check`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from ..errors import ProvisionError
from ..layout import Layout
from .ca import Issuer
from .certs import issued_by
from .keys import parse_key, same_key
from .leaves import LeafSpec, spec_of
from .report import Report
from .state import State, digest, record, revoked_serials

__all__ = ["CODES", "KEY_MODE", "DIR_MODE", "Problem", "Verdict", "judge", "mode_problem", "ca_mode_problems",
           "repair"]

#: The widest mode a private key may have, and a directory holding keys.
KEY_MODE, DIR_MODE = 0o600, 0o700
_LIMITS = {"key-mode": KEY_MODE, "dir-mode": DIR_MODE}

#: Every problem code, with the short reason `issue` reports when it reissues for it.
CODES = {
    "missing": "missing",
    "unreadable": "unreadable",
    "key-mismatch": "does not match its key",
    "wrong-ca": "issued by another CA",
    "expires": "expires",
    "not-yet-valid": "not yet valid",
    "revoked": "revoked",
    "inventory-changed": "inventory changed",
    "key-mode": "key mode too wide",
    "dir-mode": "directory mode too wide",
}

_NOT_THE_INVENTORY = "does not match the inventory (names, key type or usage)"

#: Codes fixed in place (the mode narrowed); every other code needs a new certificate.
_REPAIRABLE = frozenset({"key-mode", "dir-mode"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file: a code from `CODES`, the file, and what is wrong with it."""

    code: str
    path: Path
    detail: str

    @property
    def reissue(self) -> bool:
        """Whether only a new certificate (and key) fixes it; otherwise it is repaired in place."""
        return self.code not in _REPAIRABLE

    @property
    def reason(self) -> str:
        """The short reason `issue` reports, e.g. `inventory changed`."""
        return CODES[self.code]

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


@dataclass(frozen=True)
class Verdict:
    """Everything wrong with one leaf, and a state record to adopt when its files are good but unrecorded."""

    spec: LeafSpec
    problems: tuple[Problem, ...] = ()
    record: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Nothing to fix."""
        return not self.problems

    @property
    def reissue(self) -> bool:
        """Whether the leaf needs a new certificate and key."""
        return any(p.reissue for p in self.problems)

    @property
    def repairs(self) -> tuple[Problem, ...]:
        """The problems to repair in place: all mode problems, except the key's when it is reissued
        (the new key is written 0600)."""
        return tuple(p for p in self.problems
                     if not p.reissue and not (self.reissue and p.code == "key-mode"))

    @property
    def action(self) -> str:
        """What reissuing it is called in a report: `issued`, `renewed` or `reissued`."""
        codes = {p.code for p in self.problems if p.reissue}
        return "issued" if "missing" in codes else ("renewed" if codes == {"expires"} else "reissued")

    @property
    def reason(self) -> str:
        """Why it is reissued, e.g. `revoked` or `inventory changed, expires`."""
        return ", ".join(p.reason for p in self.problems if p.reissue)


def mode_problem(path: Path, code: str, *, mode: int | None = None) -> Problem | None:
    """A *code* (`key-mode` or `dir-mode`) problem when *path*'s mode (or the given *mode*) is
    wider than that code allows."""
    limit = _LIMITS[code]
    if mode is None:
        mode = path.stat().st_mode & 0o777
    if not mode & ~limit:
        return None
    return Problem(code, path, f"mode {mode:04o} is wider than {limit:04o}")


def ca_mode_problems(layout: Layout) -> list[Problem]:
    """Widened modes of the PKI's directories and of the CA's private keys."""
    paths = [(layout.root, "dir-mode"), (layout.ca_dir, "dir-mode"), (layout.hosts_dir, "dir-mode"),
             (layout.root_key, "key-mode"), (layout.intermediate_key, "key-mode")]
    return [p for path, code in paths if path.exists() and (p := mode_problem(path, code))]


def _read_private(path: Path) -> tuple[bytes, int]:
    """The bytes of a private file and its mode, from one open (no second lookup of the path)."""
    with open(path, "rb") as f:
        return f.read(), os.fstat(f.fileno()).st_mode & 0o777


def _expiry(path: Path, not_after: dt.datetime, now: dt.datetime,
            renew_before: dt.datetime) -> Problem | None:
    if not_after <= now:
        return Problem("expires", path, f"expired on {not_after:%Y-%m-%d}")
    if not_after <= renew_before:
        return Problem("expires", path, f"expires on {not_after:%Y-%m-%d}, within the renewal window")
    return None


def judge(
    spec: LeafSpec,
    layout: Layout,
    issuer: Issuer,
    state: State,
    *,
    now: dt.datetime,
    renew_before: dt.datetime | None = None,
    revoked: Collection[str] | None = None,
    trust_record: bool = True,
) -> Verdict:
    """Everything wrong with the leaf *spec* on disk under *issuer*.

    Missing files end the judgement (`missing`); otherwise the key's and its directory's modes
    are judged (`key-mode`, `dir-mode`: repairable), then the certificate. With *trust_record*
    and files byte-identical to what state.json recorded, the record is believed (inventory,
    issuer, revocation, expiry; nothing parsed); else the files are parsed and verified:
    `unreadable`, `key-mismatch`, `wrong-ca`, `expires` (by *renew_before*, default *now*),
    `not-yet-valid`, `revoked`, `inventory-changed`. A parsed leaf needing no new certificate
    comes with the `record` to adopt.
    """
    renew_before = renew_before or now
    revoked = revoked_serials(state) if revoked is None else revoked
    cert_path, key_path = layout.cert(spec.host, spec.kind), layout.key(spec.host, spec.kind)
    try:
        cert_bytes = cert_path.read_bytes()
        key_bytes, key_mode = _read_private(key_path)
        dir_mode = key_path.parent.stat().st_mode & 0o777
    except FileNotFoundError:
        return Verdict(spec, (Problem("missing", cert_path, "missing"),))
    except OSError as exc:
        unreadable = f"certificate or key unreadable ({exc.strerror})"
        return Verdict(spec, (Problem("unreadable", cert_path, unreadable),))
    problems = [p for p in (mode_problem(key_path, "key-mode", mode=key_mode),
                            mode_problem(key_path.parent, "dir-mode", mode=dir_mode)) if p]

    entry = state["leaves"].get(spec.name) if trust_record else None
    if entry and entry.get("cert") == digest(cert_bytes) and entry.get("key") == digest(key_bytes):
        # Fast path: the files are byte-for-byte what this tool wrote and recorded.
        if entry.get("spec") != spec.fingerprint():
            problems.append(Problem("inventory-changed", cert_path, _NOT_THE_INVENTORY))
        if entry.get("issuer") != issuer.id:
            problems.append(Problem("wrong-ca", cert_path, "issued by another CA"))
        if entry["serial"] in revoked:
            problems.append(Problem("revoked", cert_path, "revoked"))
        if expiry := _expiry(cert_path, dt.datetime.fromisoformat(entry["not_after"]), now, renew_before):
            problems.append(expiry)
        return Verdict(spec, tuple(problems))

    # Slow path: files we have no record of (state lost, or edited by hand). Judge the files.
    try:
        cert = x509.load_pem_x509_certificates(cert_bytes)[0]
        key = parse_key(key_bytes)
    except (ValueError, TypeError):
        problems.append(Problem("unreadable", cert_path, "certificate or key unreadable"))
        return Verdict(spec, tuple(problems))
    if not same_key(cert, key):
        problems.append(Problem("key-mismatch", key_path, f"does not match {cert_path.name}"))
    if not issued_by(cert, issuer.cert):
        problems.append(Problem("wrong-ca", cert_path, "chain does not verify against the CA"))
    if expiry := _expiry(cert_path, cert.not_valid_after_utc, now, renew_before):
        problems.append(expiry)
    elif cert.not_valid_before_utc > now:
        not_before = cert.not_valid_before_utc
        problems.append(Problem("not-yet-valid", cert_path, f"not valid before {not_before:%Y-%m-%d}"))
    if format(cert.serial_number, "x") in revoked:
        problems.append(Problem("revoked", cert_path, "revoked"))
    if spec_of(cert, spec) != spec.fingerprint():
        problems.append(Problem("inventory-changed", cert_path, _NOT_THE_INVENTORY))
    verdict = Verdict(spec, tuple(problems))
    if verdict.reissue:
        return verdict
    return Verdict(spec, verdict.problems, record(spec.fingerprint(), cert, cert_bytes, key_bytes, issuer.id))


def repair(problem: Problem, layout: Layout, report: Report) -> None:
    """Narrow a widened mode to its limit, in place, and report it (nothing if already narrow)."""
    limit = _LIMITS[problem.code]
    try:
        mode = problem.path.stat().st_mode & 0o777
        if not mode & ~limit:
            return  # shared by several verdicts (a host directory) and repaired already
        narrowed = mode & limit
        os.chmod(problem.path, narrowed)
    except OSError as exc:
        raise ProvisionError(f"cannot narrow the mode: {exc.strerror}", where=str(problem.path)) from None
    path = problem.path
    label = path.relative_to(layout.root).as_posix() if path != layout.root else str(path)
    report.add("repaired", label, f"mode {mode:04o} -> {narrowed:04o}")
