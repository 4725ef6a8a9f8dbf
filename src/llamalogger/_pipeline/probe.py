"""``LlamaLogger.check()``: connect apart from the writer and verify the schema, at once.

For users who want a misconfiguration to stop their worker at start-up, where the
writer itself would keep the events on disk and report it on the ``llamalogger`` logger.
"""

from __future__ import annotations

import math
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .._conninfo import scrub
from .._errors import ConnectionFailed, LlamaLogError
from ..schema._plan import require_current
from .sink import BatchSink, Sink, needs_fix

__all__ = ["probe"]

# libpq waits at least this long for a connection, whatever it is asked.
_MIN_CONNECT_TIMEOUT = 2


def probe(sink: Sink, timeout: float) -> None:
    """Raise ``ConnectionFailed`` or ``SchemaNotMigrated`` if ``sink`` cannot write now.

    A sink that is not PostgreSQL (the in-memory one of ``llamalogger.testing``) has
    nothing to check.
    """
    if not isinstance(sink, BatchSink):
        return
    # The sink's own settings, read here rather than adding a method to it: the sink
    # module keeps to writing. Never the writer's connection: its thread may be using it.
    conninfo = sink._conninfo
    pool = sink._pool
    try:
        if pool is not None:
            with pool.connection(timeout=timeout) as conn:
                _verify(conn, sink.schema, timeout)
            return
        options: dict[str, Any] = {}
        if "application_name" not in _given(conninfo):  # the DSN's own wins
            options["application_name"] = "llamalogger-check"
        options.update(sink._connect_kwargs)
        # check()'s own bound, whatever the DSN says: it is what the caller asked for.
        options["connect_timeout"] = max(_MIN_CONNECT_TIMEOUT, math.ceil(timeout))
        with psycopg.connect(conninfo or "", **options) as conn:
            _verify(conn, sink.schema, timeout)
    except LlamaLogError:
        raise
    except Exception as exc:  # the server's or the network's word, a pool's timeout
        raise ConnectionFailed(_describe(sink, conninfo, exc)) from None


def _given(conninfo: str | None) -> dict[str, Any]:
    """The parameters the DSN itself sets."""
    try:
        return conninfo_to_dict(conninfo or "")
    except psycopg.ProgrammingError:
        return {}


def _verify(conn: psycopg.Connection[Any], schema: str, timeout: float) -> None:
    """``SchemaNotMigrated`` unless ``schema`` is at this package's version."""
    # Bounded like the connection: a schema locked by a migration must not hang here.
    milliseconds = str(max(1, round(timeout * 1000)))
    conn.execute("SELECT set_config('statement_timeout', %s, true)", [milliseconds])
    try:
        require_current(conn, schema)
    finally:
        conn.rollback()  # leaves nothing open, on a borrowed connection too


def _describe(sink: BatchSink, conninfo: str | None, exc: BaseException) -> str:
    target = sink.target()
    where = f"host={target['host']} port={target['port']} dbname={target['dbname']}"
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if conninfo:
        reason = scrub(reason, conninfo)
    fix = needs_fix(exc) or "check that the server runs and that this host can reach it"
    return f"llamalogger cannot connect to {where}: {reason} (to fix: {fix})"
