"""The server's own word on a write in progress: whether the ``COPY`` that the writer's
backend runs still takes rows (``pg_stat_progress_copy``, PostgreSQL 14 and later).

The writer hands a batch's rows to its ``COPY`` much faster than a slow server takes them,
and the network's buffers hold megabytes: often the last row is handed long before the
server has stored the first thousands, and the writer then waits for the answer with
nothing to show for it. Only the server knows whether it still takes rows. A daemon thread
asks it, on a connection apart from the writer's, a few times a second, and only while
someone waits for room in the queue; callers read a number and never wait for the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg
import psycopg.errors

from .diagnostics import diagnostics

__all__ = ["ServerProgress"]

# How often the server is asked while someone watches: a few times per hang interval
# (half of block_timeout, 0.5 s by default), so that a moving write is seen as moving.
_POLL_INTERVAL = 0.1
# The thread (and its connection) ends once nobody has asked for this long: kept a while,
# so that the next wait for room finds it connected (connecting on a busy machine can
# take longer than the hang interval itself).
_IDLE_AFTER = 10.0
# libpq's smallest connect_timeout: a server that does not answer shows no progress.
_CONNECT_TIMEOUT = 2.0
# After a failed watch (a server out of connection slots, a stalled network), the next
# try waits this long: callers ask twenty times a second, the server must not pay for it.
_RETRY_AFTER = 5.0

_QUERY = (
    "SELECT tuples_processed, bytes_processed FROM pg_catalog.pg_stat_progress_copy WHERE pid = %s"
)

Connect = Callable[[float], AbstractContextManager[psycopg.Connection[Any]]]


class ServerProgress:
    """Counts the changes the server shows in the progress of one backend's ``COPY``.

    ``connect(timeout)`` gives a connection apart from the writer's. With ``hold`` the
    thread keeps it while it watches (a connection of the logger's own); without, it takes
    one for each look (borrowed from a user's pool, which must not lose it for long).
    """

    def __init__(self, connect: Connect, *, hold: bool = True) -> None:
        self._connect = connect
        self._hold = hold
        self._lock = threading.Lock()  # one watching thread at a time
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._asked_at = 0.0
        self._changes = 0
        self._closed = False
        self._retry_at = 0.0  # no new watch before this moment (time.monotonic())
        self._reported = False  # why the server cannot be watched: said once

    def seen(self, pid: int | None) -> int:
        """How often the server was seen to move on ``pid``'s ``COPY`` (any backend's,
        counted together); watches ``pid`` from now on. Never waits for the server."""
        self._asked_at = now = time.monotonic()
        if pid is not None and not self._closed and now >= self._retry_at:
            self._pid = pid
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._watch, name="llamalogger-progress", daemon=True
                    )
                    self._thread.start()
        return self._changes

    def close(self) -> None:
        """Stop watching: the thread ends within one poll interval."""
        self._closed = True

    def _watching(self) -> bool:
        return not self._closed and time.monotonic() - self._asked_at < _IDLE_AFTER

    def _watch(self) -> None:
        last: object = None
        try:
            while self._watching():
                with self._connect(_CONNECT_TIMEOUT) as conn:
                    while self._watching():
                        pid = self._pid
                        # Never prepared: the connection may be a pooler's (PgBouncer).
                        row = conn.execute(_QUERY, (pid,), prepare=False).fetchone()
                        conn.commit()  # the statistics are read anew in each transaction
                        state = (pid, row)
                        # A first look counts only a COPY the server has taken rows of.
                        first = last is None and row is not None and any(row)
                        if first or (last is not None and state != last):
                            self._changes += 1
                        last = state
                        time.sleep(_POLL_INTERVAL)
                        if not self._hold:
                            break
        except psycopg.errors.UndefinedTable:
            # Before PostgreSQL 14: callers judge a write by the rows handed to it alone.
            self._closed = True
            self._report("the server has no pg_stat_progress_copy (PostgreSQL 13 or older)")
        except Exception as exc:
            # No answer is no sign of progress: a write that really hangs is still cancelled.
            self._retry_at = time.monotonic() + _RETRY_AFTER
            self._report(type(exc).__name__)  # its text might name the server's address

    def _report(self, why: str) -> None:
        if not self._reported:
            self._reported = True
            diagnostics.info(
                "llamalogger cannot see the server's progress on its writes (%s); a write "
                "is judged by the rows handed to it alone",
                why,
            )
