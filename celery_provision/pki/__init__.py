"""The PKI: a CA (optionally with an intermediate), broker server certificates, worker and
client certificates, Celery message-signing keys, revocation and a CRL.

Everything is decided per artefact by one judge (`judge.judge`): a re-run issues nothing
when every certificate is valid and matches the inventory, narrows a widened key or
directory mode without reissuing, and never touches a file it does not have to replace.

One module per concept: `keys`, `certs`, `ca`, `leaves`, `state`, `judge`, `crl`,
`signers`, `report`, `listing` (list, check, revoked hosts) and `ops` (issue, renew, revoke,
readmit, prune).
"""

from __future__ import annotations

from ..layout import KINDS, Layout
from .judge import Problem, Verdict, judge
from .keys import generate_key, key_type_of, passphrase_for
from .leaves import LeafSpec, leaf_specs
from .listing import check, inventory_rows, revoked_hosts
from .ops import issue, prune, readmit, renew, revoke, skipped_detail
from .report import Report

__all__ = [
    "KINDS",
    "Layout",
    "LeafSpec",
    "Problem",
    "Report",
    "Verdict",
    "check",
    "generate_key",
    "inventory_rows",
    "issue",
    "judge",
    "key_type_of",
    "leaf_specs",
    "passphrase_for",
    "prune",
    "readmit",
    "renew",
    "revoke",
    "revoked_hosts",
    "skipped_detail",
]
