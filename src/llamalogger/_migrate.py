"""The migration runner: versioned SQL files from ``llamalogger.migrations``, applied in order.

Each file runs in a transaction of its own with ``search_path`` set to the target schema and
is recorded in ``<schema>.schema_migrations``. A session advisory lock keyed on the schema
name serialises runners, so any number of workers may call :func:`migrate` at start-up.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any, cast

import attrs
import psycopg
from psycopg import sql

from ._errors import MigrationError
from ._postgres import validate_schema

__all__ = [
    "LATEST_VERSION",
    "BackfillReport",
    "MigrateResult",
    "Migration",
    "available_migrations",
    "backfill_root_job_id",
    "current_version",
    "migrate",
]

#: The newest schema version this package ships (a test keeps it equal to the last file).
LATEST_VERSION = "0003"

DEFAULT_SCHEMA = "llamalog"

# The migration after which existing rows need their root_job_id backfilled.
_ROOT_JOB_ID_VERSION = "0002"

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@attrs.frozen
class Migration:
    """One versioned SQL file; ``0002_root_job_id.sql`` is version ``0002``, ``root_job_id``."""

    version: str
    name: str
    sql: str = attrs.field(repr=False)


@attrs.frozen
class BackfillReport:
    """Row counts from the root_job_id backfill; ``str()`` is the one-line report the CLI prints."""

    filled: int
    orphans: int
    unresolved: int
    total: int

    def __str__(self) -> str:
        return (
            f"backfill: {self.filled} filled, {self.orphans} orphans, "
            f"{self.unresolved} unresolved, {self.total} total"
        )


@attrs.frozen
class MigrateResult:
    """What :func:`migrate` did: the migrations applied in this run and the version reached."""

    schema: str
    applied: tuple[Migration, ...]
    version: str | None
    backfill: BackfillReport | None


@functools.cache
def available_migrations() -> tuple[Migration, ...]:
    """The migrations shipped in ``llamalogger.migrations``, sorted by version."""
    found: dict[str, Migration] = {}
    for entry in resources.files("llamalogger.migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        version = match["version"]
        if version in found:
            # A packaging mistake; applying either file silently would be worse.
            raise MigrationError(f"two migration files share version {version}")
        found[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return tuple(found[version] for version in sorted(found))


def current_version(conn: psycopg.Connection[Any], schema: str = DEFAULT_SCHEMA) -> str | None:
    """The newest version recorded in ``schema``, or None if the schema or its table is missing.

    Read-only; on a connection outside autocommit it leaves the transaction it opens to the caller.
    """
    validate_schema(schema)
    exists = conn.execute(
        "SELECT EXISTS ("
        " SELECT FROM pg_catalog.pg_class AS c"
        " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = 'schema_migrations')",
        (schema,),
    ).fetchone()
    if exists is None or not exists[0]:
        return None
    row = conn.execute(
        sql.SQL("SELECT max(version) FROM {}.schema_migrations").format(sql.Identifier(schema))
    ).fetchone()
    return None if row is None else cast("str | None", row[0])


def migrate(
    conn: psycopg.Connection[Any],
    *,
    schema: str = DEFAULT_SCHEMA,
    target: str | None = None,
) -> MigrateResult:
    """Apply every pending migration up to ``target`` (default: the newest) to ``schema``.

    Idempotent: a schema already at ``target`` is left alone. The connection must have no
    transaction open; it is switched to autocommit for the run (each migration then commits on
    its own) and its setting restored afterwards. When ``0002`` is applied, existing rows are
    backfilled in the same transaction and the report is returned in ``backfill``.

    Raises :class:`MigrationError` for an unknown target, a downgrade, or a schema newer than
    this package; :class:`ConfigurationError` for an invalid schema name.
    """
    validate_schema(schema)
    migrations = available_migrations()
    known = [m.version for m in migrations]
    if target is None:
        target = known[-1]
    elif target not in known:
        raise MigrationError(
            f"unknown migration target {target!r}; known versions: {', '.join(known)}"
        )

    with _autocommit(conn), _migration_lock(conn, schema):
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                    " version text PRIMARY KEY,"
                    " name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(sql.Identifier(schema))
            )
        recorded = _recorded_versions(conn, schema)
        unknown = sorted(recorded - set(known))
        if unknown:
            raise MigrationError(
                f"schema {schema!r} has version {unknown[-1]}, which this package does not know "
                f"(its latest is {known[-1]}): upgrade llamalogger"
            )
        if recorded and target < max(recorded):
            raise MigrationError(
                f"schema {schema!r} is at version {max(recorded)}; cannot go back to {target}: "
                "downgrades are not supported"
            )

        applied: list[Migration] = []
        backfill: BackfillReport | None = None
        for migration in migrations:
            if migration.version in recorded or migration.version > target:
                continue
            try:
                with conn.transaction():
                    _apply(conn, schema, migration)
                    if migration.version == _ROOT_JOB_ID_VERSION:
                        # Same transaction as the ALTER: a recorded 0002 means rows were filled.
                        backfill = _call_backfill(conn, schema)
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {migration.version}_{migration.name} failed and was rolled "
                    f"back: {exc}"
                ) from exc
            applied.append(migration)
        return MigrateResult(
            schema=schema,
            applied=tuple(applied),
            version=current_version(conn, schema),
            backfill=backfill,
        )


def backfill_root_job_id(
    conn: psycopg.Connection[Any], *, schema: str = DEFAULT_SCHEMA
) -> BackfillReport:
    """Fill ``root_job_id`` where it is NULL in ``schema``'s rows and commit; safe to re-run."""
    validate_schema(schema)
    with _autocommit(conn), conn.transaction():
        return _call_backfill(conn, schema)


def _recorded_versions(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    rows = conn.execute(
        sql.SQL("SELECT version FROM {}.schema_migrations").format(sql.Identifier(schema))
    ).fetchall()
    return {str(version) for (version,) in rows}


def _apply(conn: psycopg.Connection[Any], schema: str, migration: Migration) -> None:
    # LOCAL: the schema is the search_path of this migration's transaction only.
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    # The file is package data, not user input; without parameters psycopg sends it with the
    # simple query protocol, which runs every statement in it.
    conn.execute(migration.sql)
    conn.execute(
        sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s)").format(
            sql.Identifier(schema)
        ),
        (migration.version, migration.name),
    )


def _call_backfill(conn: psycopg.Connection[Any], schema: str) -> BackfillReport:
    row = conn.execute(
        sql.SQL(
            "SELECT filled, orphans, unresolved, total FROM {}.llama_log_backfill_root_job_id()"
        ).format(sql.Identifier(schema))
    ).fetchone()
    if row is None:  # the function returns exactly one row; this guards the type only
        raise MigrationError("the backfill function returned no report")
    filled, orphans, unresolved, total = row
    return BackfillReport(int(filled), int(orphans), int(unresolved), int(total))


@contextmanager
def _autocommit(conn: psycopg.Connection[Any]) -> Iterator[None]:
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
def _migration_lock(conn: psycopg.Connection[Any], schema: str) -> Iterator[None]:
    """Hold a session advisory lock for ``schema``, so concurrent runners apply each file once."""
    # Keyed on the schema, so runners for different schemas do not wait on each other.
    key = "llamalogger.migrate:" + schema
    # Blocks until the runner ahead of us is done; it then finds nothing left to apply.
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
    try:
        yield
    finally:
        # A broken connection has lost its session, and the lock with it.
        if not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
