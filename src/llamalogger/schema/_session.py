"""Session settings of a migration run: autocommit, timeouts, and the advisory lock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql

from .._errors import MigrationError

__all__ = [
    "autocommit",
    "migration_lock",
    "quoted",
    "run_settings",
    "session_values",
    "set_step_local",
]

# Catalog-only steps finish in milliseconds once they hold their lock; a statement that runs
# longer than this is not what the file meant, and holding its lock that long would stall writers.
_STEP_STATEMENT_TIMEOUT = "60s"
# A killed runner's backend notices its client is gone within this, ends its statement and
# releases its locks, instead of running on until it next tries to answer (PostgreSQL 14+).
_CLIENT_CHECK_INTERVAL = "250ms"


def quoted(schema: str) -> str:
    """``schema`` as one element of a search_path, quoted as an identifier."""
    return '"' + schema.replace('"', '""') + '"'


def set_step_local(conn: psycopg.Connection[Any], schema: str, *, lock_timeout: str) -> None:
    """Inside a step's transaction: its search_path, lock_timeout and statement_timeout."""
    # SET rather than set_config() for the path: PostgreSQL then stores it normalised, and
    # functions created with SET search_path FROM CURRENT carry exactly what 0.1.0 gave them.
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    conn.execute(
        "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
        (lock_timeout, _STEP_STATEMENT_TIMEOUT),
    )


@contextmanager
def autocommit(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run a block in autocommit mode, so that ``conn.transaction()`` blocks really commit."""
    if conn.autocommit:
        yield
        return
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        # Committing or rolling back the caller's work for them would be a surprise either way.
        raise MigrationError(
            "the connection has a transaction open: commit or roll back before migrating"
        )
    conn.autocommit = True
    try:
        yield
    finally:
        # A broken connection cannot take the setting back, and is of no use to anyone anyway.
        if not conn.broken and not conn.closed:
            conn.autocommit = False


@contextmanager
def session_values(conn: psycopg.Connection[Any], **values: str) -> Iterator[None]:
    """Set session settings for a block and put the caller's values back afterwards."""
    saved = {}
    for name, value in values.items():
        row = conn.execute(
            "SELECT current_setting(%s), set_config(%s, %s, false)", (name, name, value)
        ).fetchone()
        saved[name] = "" if row is None else str(row[0])
    try:
        yield
    finally:
        if not conn.broken and not conn.closed:
            for name, value in saved.items():
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))


@contextmanager
def run_settings(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """The session settings of a whole run."""
    if conn.info.server_version < 140000:  # client_connection_check_interval is 14+
        yield
        return
    with session_values(conn, client_connection_check_interval=_CLIENT_CHECK_INTERVAL):
        yield


@contextmanager
def migration_lock(conn: psycopg.Connection[Any], schema: str, wait: float) -> Iterator[None]:
    """Hold a session advisory lock for ``schema``, so concurrent runners apply each step once."""
    # Keyed on the schema, so runners for different schemas do not wait on each other.
    key = "llamalogger.migrate:" + schema
    # lock_timeout bounds the wait for an advisory lock too: a second runner waits for the
    # first one (then finds nothing left to do), but not forever.
    try:
        with session_values(conn, lock_timeout=f"{max(1, round(wait * 1000))}ms"):
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
    except psycopg.errors.LockNotAvailable as exc:
        holder = conn.execute(
            "SELECT l.pid FROM pg_catalog.pg_locks AS l"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid"
            " AND l.database = (SELECT oid FROM pg_catalog.pg_database"
            "  WHERE datname = current_database())",
            (key,),
        ).fetchone()
        who = f" (server process {holder[0]})" if holder else ""
        raise MigrationError(
            f"another `llamalog migrate` is running on schema {schema!r}{who}; waited "
            f"{wait:g} s for it: run it again when that one has finished"
        ) from exc
    try:
        yield
    finally:
        # A broken connection has lost its session, and the lock with it.
        if not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
