"""Output: findings as a table or JSON, the exit status, and what could not be read."""

from __future__ import annotations

import json
from collections.abc import Iterable

from .config import Config
from .rules import Finding, Severity

__all__ = ["exit_status", "format_notes", "format_table", "to_json"]


def _worst_first(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (-f.severity.rank, f.code, f.setting))


def format_table(findings: Iterable[Finding]) -> str:
    """Render findings as a plain-text table, worst first, the fix under each reason."""
    rows = _worst_first(findings)
    if not rows:
        return "no findings"
    w_sev = max(len("SEVERITY"), *(len(f.severity.value) for f in rows))
    w_code = max(len("CODE"), *(len(f.code) for f in rows))
    w_set = max(len("SETTING"), *(len(f.setting) for f in rows))
    indent = " " * (w_sev + w_code + w_set + 6)
    lines = [f"{'SEVERITY':<{w_sev}}  {'CODE':<{w_code}}  {'SETTING':<{w_set}}  REASON / FIX"]
    for f in rows:
        lines.append(
            f"{f.severity.value:<{w_sev}}  {f.code:<{w_code}}  {f.setting:<{w_set}}  {f.reason}"
        )
        lines.append(f"{indent}fix: {f.fix}")
    counts = {s: sum(1 for f in rows if f.severity is s) for s in reversed(Severity)}
    lines.append("")
    lines.append(", ".join(f"{n} {s.value}" for s, n in counts.items() if n))
    return "\n".join(lines)


def to_json(findings: Iterable[Finding]) -> str:
    """Render findings as a JSON array of {severity, code, setting, reason, fix}, worst first."""
    return json.dumps([f.as_dict() for f in _worst_first(findings)], indent=2)


def exit_status(findings: Iterable[Finding], fail_on: Severity) -> int:
    """Return 1 when any finding is at or above FAIL_ON, else 0."""
    return 1 if any(f.severity >= fail_on for f in findings) else 0


def format_notes(conf: Config) -> list[str]:
    """One line per note on how CONF was read, then one per value that could not be read."""
    return [*conf.notes, *(str(u) for u in conf.unresolved)]
