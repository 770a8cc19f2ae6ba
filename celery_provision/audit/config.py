"""What a target configures: settings named as written, where they came from, what is unknown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Config", "Partial", "Unresolved"]


@dataclass(frozen=True)
class Unresolved:
    """A value the reader could not work out without running the user's code."""

    setting: str  # as written, with a key path for values inside a dict: broker_use_ssl['x']
    where: str  # file:line
    why: str  # one line: "environment variable REDIS_URL is not set here and has no default"

    def __str__(self) -> str:
        return f"could not resolve {self.setting} at {self.where}: {self.why}"


class Partial(str):
    """A string with unresolved parts, each shown as ``${name}`` (an f-string of env values)."""

    __slots__ = ()


@dataclass
class Config:
    """The settings Celery would end up with, named as the user wrote them.

    ``settings`` maps each name as written (``CELERY_BROKER_USE_SSL``) to its value, an
    ``Unresolved`` when it could not be read; dict and list values may hold ``Unresolved``
    items too. ``origins`` says, per name, where a value came from when that is not the
    plain text of the file ("from environment variable X", "set under a condition at f:3").
    """

    settings: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    unresolved: list[Unresolved] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    namespace: str | None = None
    notes: list[str] = field(default_factory=list)  # how the target was read, one line each
