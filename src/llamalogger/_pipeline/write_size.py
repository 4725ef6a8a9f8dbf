"""How many rows one write may hold: a whole batch, until a limit of the server's (a
``statement_timeout`` the writer could not lift, another session's cancel) cancels a write;
then half as many as the cancelled write held, growing back while writes fit.

Runs on the writer thread only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

__all__ = ["WriteSize"]

_T = TypeVar("_T")

# Writes at the cap that fit before it is doubled: a limit that was lifted (or a one-off
# cancel) costs a few dozen smaller writes, a lasting one a cancelled write now and then.
_GROW_AFTER = 16


class WriteSize:
    """The most rows per write; ``None`` while no write was cancelled by a limit."""

    __slots__ = ("_fitted", "_most")

    def __init__(self) -> None:
        self._most: int | None = None
        self._fitted = 0

    @property
    def most(self) -> int | None:
        return self._most

    def parts(self, batch: Sequence[_T]) -> list[Sequence[_T]]:
        """``batch`` in consecutive parts of at most ``most`` rows (itself when it fits)."""
        most = self._most
        if most is None or len(batch) <= most:
            return [batch]
        return [batch[start : start + most] for start in range(0, len(batch), most)]

    def too_big(self, rows: int) -> int:
        """A write of ``rows`` was cancelled by a limit: returns the new, halved, cap."""
        self._most = max(1, rows // 2)
        self._fitted = 0
        return self._most

    def fitted(self, rows: int) -> None:
        """A write of ``rows`` went through."""
        if self._most is None or rows < self._most:
            return
        self._fitted += 1
        if self._fitted >= _GROW_AFTER:
            self._most *= 2
            self._fitted = 0
