"""``LlamaLogger.check()``: connect apart from the writer and verify the schema, at once.

For users who want a misconfiguration to stop their worker at start-up, where the
writer itself would keep the events on disk and report it on the ``llamalogger`` logger.
It stands beside the facade, not in ``_pipeline``, because it asks ``schema`` for the
version, which the pipeline never imports (docs/design.md section 7).
"""

from __future__ import annotations

from typing import Any

import psycopg

from ._errors import ConnectionFailed, LlamaLogError
from ._pipeline import BatchSink, Sink
from .schema import require_current

__all__ = ["probe"]


def probe(sink: Sink, timeout: float) -> None:
    """Raise ``ConnectionFailed`` or ``SchemaNotMigrated`` if ``sink`` cannot write now.

    A sink that is not PostgreSQL (the in-memory one of ``llamalogger.testing``) has
    nothing to check.
    """
    if not isinstance(sink, BatchSink):
        return
    try:
        with sink.separate_connection(timeout) as conn:
            _verify(conn, sink.schema, timeout)
    except LlamaLogError:
        raise
    except Exception as exc:  # the server's or the network's word, a pool's timeout
        raise ConnectionFailed(sink.describe_failure(exc)) from None


def _verify(conn: psycopg.Connection[Any], schema: str, timeout: float) -> None:
    """``SchemaNotMigrated`` unless ``schema`` is at this package's version."""
    # Bounded like the connection: a schema locked by a migration must not hang here.
    milliseconds = str(max(1, round(timeout * 1000)))
    conn.execute("SELECT set_config('statement_timeout', %s, true)", [milliseconds])
    try:
        require_current(conn, schema)
    finally:
        conn.rollback()  # leaves nothing open, on a borrowed connection too
