"""Applying migrations: each step in its way, recorded when done, resumed after a kill.

How a step runs depends on its :class:`StepMode`:

* ``TRANSACTION``: in a transaction of its own, under a short ``lock_timeout``; a lock not
  granted in time rolls it back and it is retried with backoff and jitter, so the runner never
  queues behind a long transaction with everyone else queued behind it;
* ``CONCURRENTLY``: one ``CREATE INDEX CONCURRENTLY`` outside a transaction; an invalid index
  of the same name (left by a killed run) is dropped and built again;
* ``BACKFILL``: the batched root_job_id backfill of :mod:`._backfill`.

Every step is recorded in ``<schema>.schema_migration_steps`` when it is done (a backfill also
records its progress with each batch), and a file in ``<schema>.schema_migrations`` once all
its steps are, so a re-run after a kill resumes where it stopped. A session advisory lock keyed
on the schema name serialises runners.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, TypeVar, assert_never

import attrs
import psycopg
import psycopg.errors
from psycopg import sql

from .._conninfo import DEFAULT_SCHEMA, validate_schema
from .._errors import ConfigurationError, MigrationError
from ._backfill import BackfillReport, Progress, backfill_batches, backoff
from ._files import Migration, Step, StepMode
from ._plan import (
    check_versions,
    current_version,
    done_steps,
    pending,
    recorded_versions,
    resolve_target,
)
from ._session import (
    autocommit,
    migration_lock,
    quoted,
    run_settings,
    session_values,
    set_step_local,
)

__all__ = ["MigrateResult", "backfill_root_job_id", "migrate"]

_T = TypeVar("_T")

_CONCURRENT_INDEX = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(?P<index>\w+)\s+ON\s+(?P<table>\w+)",
    re.IGNORECASE,
)

# Backoff between lock attempts grows to this: with the default retries a step keeps trying
# for about a minute, long enough for a burst of long writes (a writer replaying its spill
# files) to pass, while each attempt still holds writers up for one lock_timeout at most.
_RETRY_BACKOFF_CAP = 3.0


@attrs.frozen
class MigrateResult:
    """What :func:`migrate` did: the migrations completed in this run and the version reached.

    ``backfill`` is the report of the root_job_id backfill when this run did one: ``filled``
    adds up every backfill step of the run, the other counts describe the table at the end.
    """

    schema: str
    applied: tuple[Migration, ...]
    version: str | None
    backfill: BackfillReport | None


def migrate(
    conn: psycopg.Connection[Any],
    *,
    schema: str = DEFAULT_SCHEMA,
    target: str | None = None,
    lock_timeout: float = 0.2,
    lock_retries: int = 30,
    wait: float = 60.0,
    batch_seconds: float = 0.2,
    progress: Progress | None = None,
) -> MigrateResult:
    """Apply every pending migration up to ``target`` (default: the newest) to ``schema``.

    Safe on a live table: DDL waits at most ``lock_timeout`` seconds for its lock, and is
    retried up to ``lock_retries`` times with backoff; indexes are built concurrently; existing
    rows are backfilled in batches of about ``batch_seconds`` that commit one by one, with
    ``progress(label, done, total)`` called after each. Idempotent, and resumable: after a
    kill, the next call continues with the first step not recorded as done. Another runner on
    the same schema is waited for up to ``wait`` seconds.

    The connection must have no transaction open; it is switched to autocommit for the run and
    its settings restored afterwards.

    Raises :class:`MigrationError` for an unknown target, a downgrade, a schema newer than this
    package, a lock not granted after the retries (the step is rolled back; steps done before it
    stay done), or another runner still busy after ``wait``; :class:`ConfigurationError` for an
    invalid schema name.
    """
    validate_schema(schema)
    _check_positive(lock_timeout=lock_timeout, batch_seconds=batch_seconds, wait=wait)
    if lock_retries < 0:
        raise ConfigurationError(f"lock_retries must be 0 or more, not {lock_retries!r}")
    target = resolve_target(target)
    runner = _Runner(
        conn,
        schema,
        lock_timeout=lock_timeout,
        lock_retries=lock_retries,
        batch_seconds=batch_seconds,
        progress=progress,
    )
    with autocommit(conn), run_settings(conn), migration_lock(conn, schema, wait):
        with conn.transaction():
            _create_bookkeeping(conn, schema)
        recorded = recorded_versions(conn, schema)
        check_versions(schema, recorded, target)
        applied = []
        for migration in pending(recorded, target):
            runner.apply(migration)
            applied.append(migration)
        return MigrateResult(
            schema=schema,
            applied=tuple(applied),
            version=current_version(conn, schema),
            backfill=runner.report,
        )


def backfill_root_job_id(
    conn: psycopg.Connection[Any],
    *,
    schema: str = DEFAULT_SCHEMA,
    batch_seconds: float = 0.2,
    progress: Progress | None = None,
) -> BackfillReport:
    """Fill ``root_job_id`` wherever it is NULL in ``schema``'s rows, in committed batches.

    Safe to run at any time and to re-run: it only touches NULL roots, by the rules of
    docs/design.md section 4, and never holds a row lock longer than one batch (about
    ``batch_seconds``). The connection must have no transaction open.
    """
    validate_schema(schema)
    _check_positive(batch_seconds=batch_seconds)
    with autocommit(conn):
        return backfill_batches(conn, schema, batch_seconds=batch_seconds, progress=progress)


class _Runner:
    """Applies the steps of one migration after another, and adds up their backfill reports."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        *,
        lock_timeout: float,
        lock_retries: int,
        batch_seconds: float,
        progress: Progress | None,
    ) -> None:
        self.conn = conn
        self.schema = schema
        self.lock_timeout_ms = f"{max(1, round(lock_timeout * 1000))}ms"
        self.lock_timeout = lock_timeout
        self.lock_retries = lock_retries
        self.batch_seconds = batch_seconds
        self.progress = progress
        self.report: BackfillReport | None = None

    def apply(self, migration: Migration) -> None:
        done = done_steps(self.conn, self.schema)
        steps = migration.steps
        for index, step in enumerate(steps):
            if (migration.version, step.name) in done:
                continue
            last = index == len(steps) - 1
            try:
                match step.mode:
                    case StepMode.TRANSACTION:
                        self._transaction_step(migration, step, last=last)
                    case StepMode.CONCURRENTLY:
                        self._concurrent_step(migration, step, last=last)
                    case StepMode.BACKFILL:
                        self._backfill_step(migration, step, last=last)
                    case _:
                        assert_never(step.mode)
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {migration.version}_{migration.name} failed at step "
                    f"{step.name} ({exc}); what it had not committed was rolled back, the "
                    "steps and batches done before are kept: run `llamalog migrate` again "
                    "to resume"
                ) from exc
        if all((migration.version, step.name) in done for step in steps):
            # Every step was done but the version not recorded: a run killed in between.
            with self.conn.transaction():
                self._record(migration, None, last=True)

    def _transaction_step(self, migration: Migration, step: Step, *, last: bool) -> None:
        def run() -> None:
            with self.conn.transaction():
                set_step_local(self.conn, self.schema, lock_timeout=self.lock_timeout_ms)
                self.conn.execute(step.sql)
                self._record(migration, step, last=last)

        self._with_lock_retries(migration, step, run)

    def _concurrent_step(self, migration: Migration, step: Step, *, last: bool) -> None:
        match = _CONCURRENT_INDEX.search(step.sql)
        if match is None:  # a packaging mistake, caught by the tests of the shipped files
            raise MigrationError(f"step {step.name} is not a CREATE INDEX CONCURRENTLY")
        index, table = match["index"], match["table"]
        if self._index_valid(index) is False:
            # Left by a run killed while building it: unusable, but IF NOT EXISTS would keep it.
            self.conn.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
                    sql.Identifier(self.schema), sql.Identifier(index)
                )
            )

        target = sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(table))
        has_rows = sql.SQL("SELECT EXISTS (SELECT FROM {})").format(target)

        def on_empty_table() -> bool:
            # On an empty table a plain CREATE INDEX is instant, while CONCURRENTLY waits for
            # every older transaction in the database, however unrelated (fresh installs,
            # tests). The SHARE lock keeps it empty until commit.
            with self.conn.transaction():
                set_step_local(self.conn, self.schema, lock_timeout=self.lock_timeout_ms)
                self.conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(target))
                row = self.conn.execute(has_rows).fetchone()
                if row is None or row[0]:
                    return False
                self.conn.execute(re.sub(r"(?i)\s+CONCURRENTLY\b", "", step.sql, count=1))
                self._record(migration, step, last=last)
            return True

        row = self.conn.execute(has_rows).fetchone()
        if row is not None and not row[0]:
            try:
                if on_empty_table():
                    return
            except psycopg.errors.LockNotAvailable:
                pass  # writers are busy with it after all: build it concurrently below
        # Outside a transaction, with no lock_timeout: SHARE UPDATE EXCLUSIVE blocks neither
        # writers nor readers, and the wait for older transactions holds no lock anyone needs.
        with session_values(
            self.conn, search_path=quoted(self.schema), lock_timeout="0", statement_timeout="0"
        ):
            self.conn.execute(step.sql)
        with self.conn.transaction():
            self._record(migration, step, last=last)

    def _backfill_step(self, migration: Migration, step: Step, *, last: bool) -> None:
        steps = sql.SQL("{}.schema_migration_steps").format(sql.Identifier(self.schema))
        with self.conn.transaction():
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO {} (version, step, resume_after) VALUES (%s, %s, 0)"
                    " ON CONFLICT (version, step) DO NOTHING"
                ).format(steps),
                (migration.version, step.name),
            )
        row = self.conn.execute(
            sql.SQL("SELECT resume_after FROM {} WHERE version = %s AND step = %s").format(steps),
            (migration.version, step.name),
        ).fetchone()
        resume_after = int(row[0]) if row is not None and row[0] is not None else 0

        def checkpoint(conn: psycopg.Connection[Any], last_id: int) -> None:
            conn.execute(
                sql.SQL("UPDATE {} SET resume_after = %s WHERE version = %s AND step = %s").format(
                    steps
                ),
                (last_id, migration.version, step.name),
            )

        report = backfill_batches(
            self.conn,
            self.schema,
            resume_after=resume_after,
            checkpoint=checkpoint,
            progress=self.progress,
            label=f"{migration.version} {step.name}",
            batch_seconds=self.batch_seconds,
            lock_timeout=self.lock_timeout,
            lock_retries=self.lock_retries,
        )
        with self.conn.transaction():
            self._record(migration, step, last=last)
        filled = report.filled + (self.report.filled if self.report else 0)
        self.report = attrs.evolve(report, filled=filled)

    def _with_lock_retries(self, migration: Migration, step: Step, run: Callable[[], _T]) -> _T:
        attempt = 0
        while True:
            try:
                return run()
            except psycopg.errors.LockNotAvailable as exc:
                attempt += 1
                if attempt > self.lock_retries:
                    raise MigrationError(
                        f"migration {migration.version}_{migration.name}, step {step.name}: "
                        f"its lock ({step.lock}) was not granted within {self.lock_timeout_ms} "
                        f"in {attempt} attempts; {self._lock_holders()}. Nothing of this step "
                        "was applied; run `llamalog migrate` again once that transaction ends"
                    ) from exc
                # Between attempts the writers queued behind the attempt go on; the jitter
                # keeps the next attempt off the beat of a writer's steady commits.
                time.sleep(backoff(attempt, cap=_RETRY_BACKOFF_CAP))

    def _lock_holders(self) -> str:
        """Who holds a lock on llama_log: the oldest transaction first, for the message."""
        rows = self.conn.execute(
            "SELECT a.pid, a.application_name,"
            " extract(epoch FROM clock_timestamp() - a.xact_start)"
            " FROM pg_catalog.pg_locks AS l"
            " JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid"
            " JOIN pg_catalog.pg_class AS c ON c.oid = l.relation"
            " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = 'llama_log' AND l.granted"
            " AND l.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL"
            " ORDER BY a.xact_start LIMIT 3",
            (self.schema,),
        ).fetchall()
        if not rows:
            return f"other transactions held conflicting locks on schema {self.schema!r}"
        held = ", ".join(
            f"server process {pid}"
            + (f" ({name})" if name else "")
            + f" in a transaction open for {float(age):.1f} s"
            for pid, name, age in rows
        )
        return f"llama_log was locked by {held}"

    def _record(self, migration: Migration, step: Step | None, *, last: bool) -> None:
        schema = sql.Identifier(self.schema)
        if step is not None:
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO {}.schema_migration_steps (version, step, done_at)"
                    " VALUES (%s, %s, now())"
                    " ON CONFLICT (version, step) DO UPDATE SET done_at = now()"
                ).format(schema),
                (migration.version, step.name),
            )
        if last:
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s)"
                    " ON CONFLICT (version) DO NOTHING"
                ).format(schema),
                (migration.version, migration.name),
            )

    def _index_valid(self, index: str) -> bool | None:
        row = self.conn.execute(
            "SELECT i.indisvalid FROM pg_catalog.pg_index AS i"
            " JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid"
            " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (self.schema, index),
        ).fetchone()
        return None if row is None else bool(row[0])


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:  # also refuses NaN
            raise ConfigurationError(f"{name} must be a positive number of seconds, not {value!r}")


def _create_bookkeeping(conn: psycopg.Connection[Any], schema: str) -> None:
    name = sql.Identifier(schema)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
            " version text PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(name)
    )
    # One row per step started: done_at once it is done; resume_after is the highest id a
    # backfill step has committed, so a re-run continues after it.
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.schema_migration_steps ("
            " version text NOT NULL,"
            " step text NOT NULL,"
            " done_at timestamptz,"
            " resume_after bigint,"
            " PRIMARY KEY (version, step))"
        ).format(name)
    )
