"""The one domain error: every failure a user can cause becomes one readable line."""

from __future__ import annotations

__all__ = ["ProvisionError"]


class ProvisionError(Exception):
    """A problem the user can fix: says what is wrong and where (a file, host or setting)."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message
