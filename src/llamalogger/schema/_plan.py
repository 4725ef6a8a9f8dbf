"""What a migration run will do: the schema's recorded state, the pending steps, the dry run."""

from __future__ import annotations

from typing import Any, cast

import attrs
import psycopg
from psycopg import sql

from .._conninfo import DEFAULT_SCHEMA, validate_schema
from .._errors import MigrationError, SchemaNotMigrated
from ._files import LATEST_VERSION, Migration, StepMode, available_migrations

__all__ = [
    "MigrationPlan",
    "PlannedStep",
    "backfill_available",
    "check_versions",
    "current_version",
    "done_steps",
    "pending",
    "plan_migration",
    "recorded_versions",
    "require_current",
    "resolve_target",
    "table_exists",
]


@attrs.frozen
class PlannedStep:
    """One step :func:`migrate` would run: the lock it takes and the rows it reads or writes."""

    version: str
    migration: str
    step: str
    mode: StepMode = attrs.field(converter=StepMode)
    lock: str
    rows: int

    def __str__(self) -> str:
        return (
            f"{self.version} {self.migration}: {self.step} ({self.mode}); "
            f"lock: {self.lock}; rows: {self.rows:,}"
        )


@attrs.frozen
class MigrationPlan:
    """What :func:`migrate` would do from ``version`` to ``target``; ``str()`` is the CLI text."""

    schema: str
    version: str | None
    target: str
    steps: tuple[PlannedStep, ...]

    def __str__(self) -> str:
        head = (
            f"schema {self.schema}: version {self.version or 'none'}, target {self.target}, "
            f"{len(self.steps)} step{'s' if len(self.steps) != 1 else ''} to run"
        )
        return "\n".join([head, *(f"  {step}" for step in self.steps)])


def current_version(conn: psycopg.Connection[Any], schema: str = DEFAULT_SCHEMA) -> str | None:
    """The newest version recorded in ``schema``, or None if the schema or its table is missing.

    Read-only; on a connection outside autocommit it leaves the transaction it opens to the caller.
    """
    validate_schema(schema)
    if not table_exists(conn, schema, "schema_migrations"):
        return None
    row = conn.execute(
        sql.SQL("SELECT max(version) FROM {}.schema_migrations").format(sql.Identifier(schema))
    ).fetchone()
    return None if row is None else cast("str | None", row[0])


def require_current(conn: psycopg.Connection[Any], schema: str = DEFAULT_SCHEMA) -> str:
    """The version of ``schema`` if it is the newest this package ships, else SchemaNotMigrated."""
    version = current_version(conn, schema)
    if version is None:
        raise SchemaNotMigrated(f"schema {schema!r} is not migrated: run `llamalog migrate` first")
    if version < LATEST_VERSION:
        raise SchemaNotMigrated(
            f"schema {schema!r} is at version {version}, this llamalog needs "
            f"{LATEST_VERSION}: run `llamalog migrate`"
        )
    return version


def backfill_available(conn: psycopg.Connection[Any], schema: str = DEFAULT_SCHEMA) -> bool:
    """True once ``schema`` has ``root_job_id``, so :func:`backfill_root_job_id` can run."""
    version = current_version(conn, schema)
    return version is not None and version >= _first_backfill_version()


def _first_backfill_version() -> str:
    # The migration that adds the column is the first with a backfill step of its own.
    return next(
        m.version
        for m in available_migrations()
        if any(step.mode is StepMode.BACKFILL for step in m.steps)
    )


def plan_migration(
    conn: psycopg.Connection[Any], *, schema: str = DEFAULT_SCHEMA, target: str | None = None
) -> MigrationPlan:
    """The steps :func:`migrate` would run now, with their locks and row counts; changes nothing.

    The row counts are exact (``count(*)``), so on a large table this reads it once.
    """
    validate_schema(schema)
    target = resolve_target(target)
    version = current_version(conn, schema)
    recorded = recorded_versions(conn, schema) if version is not None else set()
    check_versions(schema, recorded, target)
    done = done_steps(conn, schema)
    has_table = table_exists(conn, schema, "llama_log")
    planned = []
    for migration in pending(recorded, target):
        for step in migration.steps:
            if (migration.version, step.name) in done:
                continue
            rows = 0
            if has_table and step.mode in (StepMode.CONCURRENTLY, StepMode.BACKFILL):
                rows = _count_rows(conn, schema, backfill=step.mode is StepMode.BACKFILL)
            planned.append(
                PlannedStep(
                    migration.version, migration.name, step.name, step.mode, step.lock, rows
                )
            )
    return MigrationPlan(schema, version, target, tuple(planned))


def resolve_target(target: str | None) -> str:
    known = [m.version for m in available_migrations()]
    if target is None:
        return known[-1]
    if target not in known:
        raise MigrationError(
            f"unknown migration target {target!r}; known versions: {', '.join(known)}"
        )
    return target


def check_versions(schema: str, recorded: set[str], target: str) -> None:
    known = [m.version for m in available_migrations()]
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


def pending(recorded: set[str], target: str) -> list[Migration]:
    return [m for m in available_migrations() if m.version not in recorded and m.version <= target]


def table_exists(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS ("
        " SELECT FROM pg_catalog.pg_class AS c"
        " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s)",
        (schema, table),
    ).fetchone()
    return row is not None and bool(row[0])


def recorded_versions(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    rows = conn.execute(
        sql.SQL("SELECT version FROM {}.schema_migrations").format(sql.Identifier(schema))
    ).fetchall()
    return {str(version) for (version,) in rows}


def done_steps(conn: psycopg.Connection[Any], schema: str) -> set[tuple[str, str]]:
    if not table_exists(conn, schema, "schema_migration_steps"):
        return set()
    rows = conn.execute(
        sql.SQL(
            "SELECT version, step FROM {}.schema_migration_steps WHERE done_at IS NOT NULL"
        ).format(sql.Identifier(schema))
    ).fetchall()
    return {(str(version), str(step)) for version, step in rows}


def _count_rows(conn: psycopg.Connection[Any], schema: str, *, backfill: bool) -> int:
    table = sql.SQL("{}.llama_log").format(sql.Identifier(schema))
    where = sql.SQL("")
    if backfill:
        has_root = conn.execute(
            "SELECT EXISTS (SELECT FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'llama_log'"
            " AND column_name = 'root_job_id')",
            (schema,),
        ).fetchone()
        where = sql.SQL(
            " WHERE job_id IS NOT NULL AND root_job_id IS NULL"
            if has_root is not None and has_root[0]
            else " WHERE job_id IS NOT NULL"
        )
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table) + where).fetchone()
    return 0 if row is None else int(row[0])
