"""The PKI: a CA (optionally with an intermediate), broker server certificates, worker and
client certificates, Celery message-signing keys, revocation and a CRL.

Everything is decided per artefact by one judge (`judge.judge`): a re-run issues nothing
when every certificate is valid and matches the inventory, narrows a widened key or
directory mode without reissuing, and never touches a file it does not have to replace.

One module per concept: `keys`, `certs`, `ca`, `leaves`, `state`, `judge`, `crl`,
`signers`, `report`, `listing` (list and check) and `ops` (issue, renew, revoke, prune).
"""

from __future__ import annotations

from ..layout import KINDS, Layout
from .judge import Problem, Verdict, judge
from .keys import generate_key, key_type_of, passphrase_for
from .leaves import LeafSpec, leaf_specs
from .listing import check, inventory_rows
from .ops import issue, prune, renew, revoke
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
    "renew",
    "revoke",
]
