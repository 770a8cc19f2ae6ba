"""What a PKI run did, artefact by artefact, and its one-line summary."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Report"]

#: The actions the summary counts, in the order it names them.
_SUMMARISED = ("issued", "reissued", "renewed", "repaired", "revoked", "admitted", "rotated", "pruned", "retired")

#: The actions that change nothing on disk: a leaf left as it was, a revoked host left alone.
_NO_CHANGE = frozenset({"unchanged", "skipped"})


@dataclass
class Report:
    """What a run did, artefact by artefact: `(action, name, detail)` events in order."""

    events: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, action: str, name: str, detail: str = "") -> None:
        """Record that *action* happened to *name* (e.g. `issued`, `worker-1/client`)."""
        self.events.append((action, name, detail))

    def count(self, action: str) -> int:
        """How many events of *action*."""
        return sum(1 for a, _, _ in self.events if a == action)

    @property
    def changed(self) -> bool:
        """Whether anything on disk changed."""
        return any(a not in _NO_CHANGE for a, _, _ in self.events)

    def summary(self) -> str:
        """E.g. `2 issued, 1 repaired`, or `nothing to do`."""
        parts = [f"{self.count(a)} {a}" for a in _SUMMARISED if self.count(a)]
        return ", ".join(parts) if parts else "nothing to do"
