"""What every benchmark script needs: a server and a scratch schema it removes afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql

from llamalogger.schema import migrate


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[str]:
    """``dsn``, else ``$LLAMALOG_DSN``, else a temporary embedded PostgreSQL."""
    dsn = dsn or os.environ.get("LLAMALOG_DSN")
    if dsn:
        yield dsn
        return
    from llamalogger.embedded import EmbeddedPostgres

    with EmbeddedPostgres(ephemeral=True) as server:
        yield server.dsn


@contextlib.contextmanager
def scratch_schema(dsn: str | None) -> Iterator[tuple[str, str, str]]:
    """(dsn, schema, server version) for a freshly migrated schema, dropped at the end."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with database(dsn) as target:
        with psycopg.connect(target, autocommit=True) as conn:
            migrate(conn, schema=schema)
            row = conn.execute("SHOW server_version").fetchone()
        try:
            yield target, schema, str(row[0]) if row else "?"
        finally:
            with psycopg.connect(target, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
