"""The web view's connections: a small pool whose every transaction is read only.

``conn.read_only`` makes psycopg open each transaction with ``BEGIN READ ONLY``, which
works through PgBouncer in transaction mode too (a startup option would not); the view
cannot write, whatever a query says.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

__all__ = ["ReadOnlyDatabase"]


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.read_only = True


class ReadOnlyDatabase:
    """A pool opened by :meth:`open` (the app's start-up) and closed by :meth:`close`."""

    def __init__(self, dsn: str, *, max_connections: int = 4, timeout: float = 10.0) -> None:
        self._timeout = timeout
        # Opened later, not here: constructing the app must not connect (no import-time I/O).
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=max_connections,
            configure=_configure,
            open=False,
            name="llamalog-web",
        )

    def open(self) -> None:
        self._pool.open()

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A read-only connection; its transaction ends (rolled back on error) on exit."""
        with self._pool.connection(timeout=self._timeout) as conn:
            yield conn
