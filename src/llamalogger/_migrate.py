"""The migration runner: versioned SQL files from ``llamalogger.migrations``, applied online.

A file is a list of steps, each introduced by a ``-- step: NAME | MODE | LOCK`` line (a file
without one is a single transaction step). MODE says how the step runs:

* ``transaction``: in a transaction of its own, under a short ``lock_timeout``; a lock not
  granted in time rolls it back and it is retried with backoff and jitter, so the runner never
  queues behind a long transaction with everyone else queued behind it;
* ``concurrently``: one ``CREATE INDEX CONCURRENTLY`` outside a transaction; an invalid index
  of the same name (left by a killed run) is dropped and built again;
* ``backfill``: the batched root_job_id backfill of :mod:`llamalogger._backfill`.

Every step is recorded in ``<schema>.schema_migration_steps`` when it is done (a backfill also
records its progress with each batch), and a file in ``<schema>.schema_migrations`` once all
its steps are, so a re-run after a kill resumes where it stopped. A session advisory lock keyed
on the schema name serialises runners.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any, TypeVar, cast

import attrs
import psycopg
import psycopg.errors
from psycopg import sql

from ._backfill import BackfillReport, Progress, backfill_batches, backoff
from ._conninfo import DEFAULT_SCHEMA, validate_schema
from ._errors import ConfigurationError, MigrationError

__all__ = [
    "LATEST_VERSION",
    "BackfillReport",
    "MigrateResult",
    "Migration",
    "MigrationPlan",
    "PlannedStep",
    "Step",
    "available_migrations",
    "backfill_root_job_id",
    "current_version",
    "migrate",
    "plan_migration",
]

#: The newest schema version this package ships (a test keeps it equal to the last file).
LATEST_VERSION = "0004"


_T = TypeVar("_T")

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_STEP_LINE = re.compile(
    r"^-- step: (?P<name>[a-z0-9_]+) \| (?P<mode>transaction|concurrently|backfill)"
    r" \| (?P<lock>.+)$",
    re.MULTILINE,
)
_CONCURRENT_INDEX = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(?P<index>\w+)\s+ON\s+(?P<table>\w+)",
    re.IGNORECASE,
)

# Catalog-only steps finish in milliseconds once they hold their lock; a statement that runs
# longer than this is not what the file meant, and holding its lock that long would stall writers.
_STEP_STATEMENT_TIMEOUT = "60s"
# Backoff between lock attempts grows to this: with the default retries a step keeps trying
# for about a minute, long enough for a burst of long writes (a writer replaying its spill
# files) to pass, while each attempt still holds writers up for one lock_timeout at most.
_RETRY_BACKOFF_CAP = 3.0
# A killed runner's backend notices its client is gone within this, ends its statement and
# releases its locks, instead of running on until it next tries to answer (PostgreSQL 14+).
_CLIENT_CHECK_INTERVAL = "250ms"


@attrs.frozen
class Step:
    """One step of a migration: its name, how it runs, and the lock it takes (for the plan)."""

    name: str
    mode: str
    lock: str
    sql: str = attrs.field(repr=False)


@attrs.frozen
class Migration:
    """One versioned SQL file; ``0002_root_job_id.sql`` is version ``0002``, ``root_job_id``."""

    version: str
    name: str
    sql: str = attrs.field(repr=False)
    #: The file's steps in order (one ``transaction`` step for a file without step lines).
    steps: tuple[Step, ...] = attrs.field(
        repr=False,
        default=attrs.Factory(lambda self: _parse_steps(self.name, self.sql), takes_self=True),
    )


def _parse_steps(name: str, text: str) -> tuple[Step, ...]:
    headers = list(_STEP_LINE.finditer(text))
    if not headers:
        return (Step(name, "transaction", "as the file says", text),)
    steps = []
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        body = text[header.end() : following.start() if following else len(text)]
        steps.append(Step(header["name"], header["mode"], header["lock"].strip(), body))
    return tuple(steps)


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


@attrs.frozen
class PlannedStep:
    """One step :func:`migrate` would run: the lock it takes and the rows it reads or writes."""

    version: str
    migration: str
    step: str
    mode: str
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
    if not _table_exists(conn, schema, "schema_migrations"):
        return None
    row = conn.execute(
        sql.SQL("SELECT max(version) FROM {}.schema_migrations").format(sql.Identifier(schema))
    ).fetchone()
    return None if row is None else cast("str | None", row[0])


def plan_migration(
    conn: psycopg.Connection[Any], *, schema: str = DEFAULT_SCHEMA, target: str | None = None
) -> MigrationPlan:
    """The steps :func:`migrate` would run now, with their locks and row counts; changes nothing.

    The row counts are exact (``count(*)``), so on a large table this reads it once.
    """
    validate_schema(schema)
    target = _resolve_target(target)
    version = current_version(conn, schema)
    recorded = _recorded_versions(conn, schema) if version is not None else set()
    _check_versions(schema, recorded, target)
    done = _done_steps(conn, schema)
    has_table = _table_exists(conn, schema, "llama_log")
    planned = []
    for migration in _pending(recorded, target):
        for step in migration.steps:
            if (migration.version, step.name) in done:
                continue
            rows = 0
            if has_table and step.mode in ("concurrently", "backfill"):
                rows = _count_rows(conn, schema, backfill=step.mode == "backfill")
            planned.append(
                PlannedStep(
                    migration.version, migration.name, step.name, step.mode, step.lock, rows
                )
            )
    return MigrationPlan(schema, version, target, tuple(planned))


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
    target = _resolve_target(target)
    runner = _Runner(
        conn,
        schema,
        lock_timeout=lock_timeout,
        lock_retries=lock_retries,
        batch_seconds=batch_seconds,
        progress=progress,
    )
    with _autocommit(conn), _session_settings(conn), _migration_lock(conn, schema, wait):
        with conn.transaction():
            _create_bookkeeping(conn, schema)
        recorded = _recorded_versions(conn, schema)
        _check_versions(schema, recorded, target)
        applied = []
        for migration in _pending(recorded, target):
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
    with _autocommit(conn):
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
        done = _done_steps(self.conn, self.schema)
        steps = migration.steps
        for index, step in enumerate(steps):
            if (migration.version, step.name) in done:
                continue
            last = index == len(steps) - 1
            try:
                if step.mode == "transaction":
                    self._transaction_step(migration, step, last=last)
                elif step.mode == "concurrently":
                    self._concurrent_step(migration, step, last=last)
                else:
                    self._backfill_step(migration, step, last=last)
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
                self._set_local(lock_timeout=self.lock_timeout_ms)
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
                self._set_local(lock_timeout=self.lock_timeout_ms)
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
        with _session_values(
            self.conn, search_path=_quoted(self.schema), lock_timeout="0", statement_timeout="0"
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

    def _set_local(self, *, lock_timeout: str) -> None:
        # SET rather than set_config() for the path: PostgreSQL then stores it normalised, and
        # functions created with SET search_path FROM CURRENT carry exactly what 0.1.0 gave them.
        self.conn.execute(
            sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self.schema))
        )
        self.conn.execute(
            "SELECT set_config('lock_timeout', %s, true),"
            " set_config('statement_timeout', %s, true)",
            (lock_timeout, _STEP_STATEMENT_TIMEOUT),
        )

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


def _resolve_target(target: str | None) -> str:
    known = [m.version for m in available_migrations()]
    if target is None:
        return known[-1]
    if target not in known:
        raise MigrationError(
            f"unknown migration target {target!r}; known versions: {', '.join(known)}"
        )
    return target


def _check_versions(schema: str, recorded: set[str], target: str) -> None:
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


def _pending(recorded: set[str], target: str) -> list[Migration]:
    return [m for m in available_migrations() if m.version not in recorded and m.version <= target]


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


def _table_exists(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS ("
        " SELECT FROM pg_catalog.pg_class AS c"
        " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s)",
        (schema, table),
    ).fetchone()
    return row is not None and bool(row[0])


def _recorded_versions(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    rows = conn.execute(
        sql.SQL("SELECT version FROM {}.schema_migrations").format(sql.Identifier(schema))
    ).fetchall()
    return {str(version) for (version,) in rows}


def _done_steps(conn: psycopg.Connection[Any], schema: str) -> set[tuple[str, str]]:
    if not _table_exists(conn, schema, "schema_migration_steps"):
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


def _quoted(schema: str) -> str:
    """``schema`` as one element of a search_path, quoted as an identifier."""
    return '"' + schema.replace('"', '""') + '"'


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
def _session_values(conn: psycopg.Connection[Any], **values: str) -> Iterator[None]:
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
def _session_settings(conn: psycopg.Connection[Any]) -> Iterator[None]:
    if conn.info.server_version < 140000:  # client_connection_check_interval is 14+
        yield
        return
    with _session_values(conn, client_connection_check_interval=_CLIENT_CHECK_INTERVAL):
        yield


@contextmanager
def _migration_lock(conn: psycopg.Connection[Any], schema: str, wait: float) -> Iterator[None]:
    """Hold a session advisory lock for ``schema``, so concurrent runners apply each step once."""
    # Keyed on the schema, so runners for different schemas do not wait on each other.
    key = "llamalogger.migrate:" + schema
    # lock_timeout bounds the wait for an advisory lock too: a second runner waits for the
    # first one (then finds nothing left to do), but not forever.
    try:
        with _session_values(conn, lock_timeout=f"{max(1, round(wait * 1000))}ms"):
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
