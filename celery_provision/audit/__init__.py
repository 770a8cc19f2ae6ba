"""Audit a Celery configuration for the security mistakes this toolkit exists to prevent.

``load_config`` imports a config module as ``app.config_from_object`` does;
``audit_config`` turns the settings into ``Finding`` objects, one per problem, each
with a one-line reason and fix.
Rules are data (``rules.TABLE``); ``checks`` decides which apply.
"""

from __future__ import annotations

from .checks import audit_config
from .config import Config, Unresolved
from .loader import load_config
from .report import exit_status, format_notes, format_table, to_json
from .rules import RULES, TABLE, Finding, Rule, Severity

__all__ = [
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
    "to_json",
]
