"""The PKI operations: issue (and init), renew, revoke, readmit, prune, each under the run lock."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .. import credentials
from ..errors import ProvisionError
from ..files import locked, private_dir
from ..layout import KINDS
from .ca import CA, ensure_ca, ensure_intermediate
from .certs import now
from .crl import ensure_crl
from .judge import ca_mode_problems, judge, repair
from .keys import passphrase_for
from .leaves import Job, issue_many, leaf_specs
from .report import Report
from .signers import retired_signer, sync_signers
from .state import (
    State,
    host_revocations,
    read_state,
    readmit_host,
    revoke_host,
    revoke_leaf,
    revoked_serials,
    save_state,
)

if TYPE_CHECKING:
    from ..model import Deployment

__all__ = ["issue", "renew", "revoke", "readmit", "prune", "skipped_detail"]


def _run(d: Deployment, body: Callable[[State], None]) -> None:
    """Run *body* on the state under the PKI's lock; save the state after, if it changed."""
    layout = d.layout
    private_dir(layout.root)
    with locked(layout.root):
        state, original = read_state(layout)
        try:
            body(state)
        finally:
            save_state(layout, state, original)


def skipped_detail(host: str) -> str:
    """Why `issue` leaves a revoked host alone, and how to undo it."""
    return f"revoked: certs readmit {host} to re-admit"


def issue(
    d: Deployment,
    *,
    renew_within_days: int | None = None,
    force_ca: bool = False,
    progress: Callable[[int, int], None] | None = None,
    only: Iterable[str] | None = None,
    processes: int | None = None,
) -> Report:
    """Create the CA if absent, then (re)issue every leaf that is missing or stale, and narrow
    every widened key or directory mode back (0600, 0700) without reissuing."""
    report = Report()
    passphrase = passphrase_for(d)
    hosts = None if only is None else set(only)

    def body(state: State) -> None:
        layout = d.layout
        ca = ensure_ca(d, passphrase, report, force=force_ca)
        if renew_within_days is not None and ca.intermediate is not None:
            within = dt.timedelta(days=renew_within_days)
            new = ensure_intermediate(d, ca.root, passphrase, report, renew_within=within)
            if new != ca.intermediate:
                ca = CA(layout, passphrase, ca.root, new)
        start = now()
        renew_before = start + dt.timedelta(days=renew_within_days or 0)
        revoked = revoked_serials(state)
        barred = host_revocations(state)
        specs = [spec for spec in leaf_specs(d) if hosts is None or spec.host in hosts]
        # A revoked host gets nothing, not even a repair: it stays revoked until `readmit`.
        for host in dict.fromkeys(spec.host for spec in specs if spec.host in barred):
            report.add("skipped", host, skipped_detail(host))
        verdicts = [judge(spec, layout, ca.issuer, state, now=start, renew_before=renew_before, revoked=revoked)
                    for spec in specs if spec.host not in barred]
        todo = [v for v in verdicts if v.reissue]
        # The CA key is loaded (and a wrong passphrase refused) before anything is touched.
        job = Job(ca.issuer_cert, ca.issuer_key(), ca.issuer_id, ca.chain(), layout) if todo else None
        for problem in ca_mode_problems(layout):
            repair(problem, layout, report)
        for verdict in verdicts:
            for problem in verdict.repairs:
                repair(problem, layout, report)
            if not verdict.reissue:
                if verdict.record is not None:
                    adopted = dict(verdict.record)
                    if previous := state["leaves"].get(verdict.spec.name, {}).get("previous"):
                        adopted["previous"] = previous
                    state["leaves"][verdict.spec.name] = adopted
                report.add("unchanged", verdict.spec.name)
        if job is not None:
            why = {v.spec.name: v for v in todo}
            # A replaced signing certificate stays trusted for the overlap window: messages it
            # signed may still be queued.
            overlap = d.settings.signing_overlap_hours > 0
            retired = {v.spec.name: retired_signer(layout, state, v.spec.name, start)
                       for v in todo if v.spec.kind == "signing" and overlap}
            for spec, entry in issue_many([v.spec for v in todo], job, progress, processes):
                if previous := retired.get(spec.name):
                    entry["previous"] = previous
                state["leaves"][spec.name] = entry
                report.add(why[spec.name].action, spec.name, why[spec.name].reason)
        sync_signers(d, state, now=start, report=report)
        ensure_crl(d, ca, state, report)

    _run(d, body)
    return report


def renew(d: Deployment, within_days: int, **kwargs: Any) -> Report:
    """Reissue every certificate that expires within *within_days* days."""
    if within_days < 0:
        raise ProvisionError(f"--within must be zero or more days, got {within_days}")
    return issue(d, renew_within_days=within_days, **kwargs)


def revoke(d: Deployment, name: str, *, kinds: Sequence[str] = KINDS, reason: str = "revoked by operator") -> Report:
    """Revoke a host's certificates (all kinds by default) and publish a new CRL.

    Revoking every kind revokes the host itself: `issue` and `renew` skip it until `readmit`,
    and `export` removes its broker users. Its files stay in place, so that `verify` can show
    that they are refused. Revoking some kinds only revokes those certificates: the next `issue`
    replaces them. The signing certificate leaves the cert store at once, either way.
    """
    host = d.host(name)  # a name not in the inventory: one line, before anything is read
    whole = set(kinds) >= set(KINDS)
    if whole and host.is_broker:
        raise ProvisionError(
            f"{name!r} is a broker: revoke its server certificate (--kind server; the next issue replaces it), "
            "or remove it from the inventory and run `certs prune`", where=str(d.inventory))
    report = Report()
    passphrase = passphrase_for(d)

    def body(state: State) -> None:
        known = {n.split("/")[0] for n in state["leaves"]}
        if name not in known:
            raise ProvisionError(f"no certificates issued for {name!r}", where=str(d.layout.root))
        ca = ensure_ca(d, passphrase, Report(), force=False)
        for kind in kinds:
            if revoke_leaf(state, f"{name}/{kind}", reason):
                report.add("revoked", f"{name}/{kind}")
        if whole and revoke_host(state, name, reason):
            report.add("revoked", name, "host: nothing is issued to it until `certs readmit`")
        sync_signers(d, state)
        ensure_crl(d, ca, state, report, force=bool(report.events))

    _run(d, body)
    return report


def readmit(d: Deployment, name: str, *, progress: Callable[[int, int], None] | None = None) -> Report:
    """Re-admit a revoked host: new passwords, new keys and certificates (a new signing key
    too), then forget the revocation, all under the PKI's lock.

    The revocation is forgotten last: a failure on the way leaves the host revoked, and running
    `readmit` again starts over. Its old certificates stay on the CRL until they expire.
    """
    host = d.host(name)
    report = Report()
    passphrase = passphrase_for(d)

    def body(state: State) -> None:
        if name not in host_revocations(state):
            raise ProvisionError(f"{name!r} is not revoked: nothing to re-admit", where=str(d.layout.state))
        layout = d.layout
        ca = ensure_ca(d, passphrase, Report(), force=False)
        specs = [spec for spec in leaf_specs(d) if spec.host == name]
        # The CA key is loaded (and a wrong passphrase refused) before anything is touched.
        job = Job(ca.issuer_cert, ca.issuer_key(), ca.issuer_id, ca.chain(), layout)
        for cred in credentials.rotate(d, host):
            report.add("rotated", f"{cred.service}/{cred.user}", "new password")
        start = now()
        for spec in specs:  # the host directory's mode; the new keys are written 0600
            verdict = judge(spec, layout, ca.issuer, state, now=start)
            for problem in verdict.problems:
                if problem.code == "dir-mode":
                    repair(problem, layout, report)
        for spec, entry in issue_many(specs, job, progress):
            state["leaves"][spec.name] = entry
            report.add("reissued", spec.name, "re-admitted")
        readmit_host(state, name)
        report.add("admitted", name, "re-admitted: new keys, certificates and passwords")
        sync_signers(d, state)
        ensure_crl(d, ca, state, report)

    _run(d, body)
    return report


def prune(d: Deployment) -> Report:
    """Revoke and delete the certificates of hosts that left the inventory."""
    report = Report()
    passphrase = passphrase_for(d)

    def body(state: State) -> None:
        layout = d.layout
        ca = ensure_ca(d, passphrase, Report(), force=False)
        gone = sorted({n.split("/")[0] for n in state["leaves"]} - set(d.hosts))
        if layout.hosts_dir.exists():
            gone = sorted(set(gone) | {p.name for p in layout.hosts_dir.iterdir() if p.is_dir() and p.name not in d.hosts})
        for host in gone:
            for kind in KINDS:
                revoke_leaf(state, f"{host}/{kind}", "host removed from the inventory")
                state["leaves"].pop(f"{host}/{kind}", None)
            shutil.rmtree(layout.hosts_dir / host, ignore_errors=True)
            report.add("pruned", host)
        sync_signers(d, state)
        if gone:
            ensure_crl(d, ca, state, report, force=True)

    _run(d, body)
    return report
