"""Audit a Celery configuration for the security mistakes this toolkit exists to prevent.

``read_config`` reads a config module, an app module or Django settings without
running them (``load_config`` imports instead); ``audit_config`` turns the settings
into ``Finding`` objects, one per problem, each with a one-line reason and fix, for
the Celery role (``ROLES``) of the host that uses the config. Rules are data
(``rules.TABLE``); ``checks`` decides which apply.
"""

from __future__ import annotations

from .checks import audit_config
from .config import Config, Unresolved
from .loader import load_config
from .reader import read_config
from .report import exit_status, format_notes, format_table, to_json
from .rules import DEFAULT_ROLE, ROLES, RULES, TABLE, Finding, Rule, Severity
from .suggest import suggest

__all__ = [
    "DEFAULT_ROLE",
    "ROLES",
    "RULES",
    "TABLE",
    "Config",
    "Finding",
    "Rule",
    "Severity",
    "Unresolved",
    "audit_config",
    "exit_status",
    "format_notes",
    "format_table",
    "load_config",
    "read_config",
    "suggest",
    "to_json",
]
