"""Where the writer's batches go: the ``Sink`` protocol, and ``BatchSink``, one COPY per
batch into PostgreSQL through an owned connection or a borrowed pool (and a second one, in
the same transaction, for the job records among them); and what a failed write means."""

from __future__ import annotations

import contextlib
import enum
import itertools
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from .._conninfo import DEFAULT_SCHEMA, check_conninfo, masked_conninfo, scrub, validate_schema
from .._errors import ConfigurationError
from .._records import COLUMNS, COPY_TYPES, JOB, JOB_COLUMNS, JOB_COPY_TYPES
from .connect_options import CONNECT_TIMEOUT, writer_options
from .progress import ServerProgress

__all__ = [
    "SCHEMA_MISSING",
    "BatchSink",
    "Failure",
    "ServerLimit",
    "Sink",
    "SpilledRows",
    "classify",
    "explain",
    "needs_fix",
    "reason",
]

# Waiting longer for a connection than this only delays the retry loop's own backoff
# and the reaction to close(). 2 s is libpq's smallest connect_timeout.
_GETCONN_TIMEOUT = 2.0
_CANCEL_TIMEOUT = 2.0


# What new code meets on a schema that is missing or older than it: it heals once an
# operator runs `llamalog migrate`, so the rows are kept meanwhile.
SCHEMA_MISSING = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.InvalidSchemaName,
)


# A spill file's id and its rows (which may be parsed only as they are taken).
SpilledRows = tuple[str, Sequence[tuple[object, ...]]]


class Sink(Protocol):
    """Where batches go; ``BatchSink`` writes them to PostgreSQL. Plain Python methods
    only, so that an in-memory sink can stand in for it.

    A batch holds the rows of events (13 fields) and of job records (16: ``JOB`` at index
    1, see ``_records.JobRecord``); a sink stores all of a batch or none of it.

    ``write`` and ``write_replays`` raise what went wrong (see ``classify``);
    ``write_replays`` stores the rows of several spill files (id, rows) all or none, and
    returns the ids it had stored already (their rows are not stored again). ``progress``
    is a number that changes while a write moves (called from other threads, it never
    waits): a write that hangs is told from a slow one by it alone. ``target``
    names where rows go (host, port, dbname, schema; never a password)."""

    def write(self, rows: Sequence[tuple[object, ...]]) -> None: ...

    def write_replays(self, files: Sequence[SpilledRows]) -> set[str]: ...

    def cancel(self, timeout: float = ...) -> None: ...

    def progress(self) -> int: ...

    def target(self) -> dict[str, str]: ...

    def after_fork_in_child(self) -> None: ...

    def close(self) -> None: ...


class Failure(enum.Enum):
    """What the writer should do about an exception from ``BatchSink.write``."""

    RETRY = "retry"  # the server or the network: keep the batch, try again later
    REJECT = "reject"  # the data: some row of the batch can never be written
    SHRINK = "shrink"  # a limit of the server's cancelled it: write fewer rows at a time


class ServerLimit(psycopg.OperationalError):
    """The server cancelled a write by a limit of its own (``setting``), not because the
    writer asked: a ``statement_timeout``, ``lock_timeout`` or idle timeout the server
    applies anyway, or another session's ``pg_cancel_backend``."""

    def __init__(self, setting: str, cause: psycopg.Error) -> None:
        lines = str(cause).strip().splitlines()
        super().__init__(f"{setting} cancelled the write ({lines[0] if lines else cause!r})")
        self.setting = setting


def _limit_of(exc: psycopg.Error) -> str:
    """Which limit of the server's cancelled a write (``exc``, one of ``_LIMITS``)."""
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return "lock_timeout"
    if isinstance(exc, psycopg.errors.IdleInTransactionSessionTimeout):
        return "idle_in_transaction_session_timeout"
    if isinstance(exc, psycopg.errors.TransactionTimeout):
        return "transaction_timeout"
    # The message tells a timeout from another session's request (in English, the
    # server's default; anything else is taken for a request).
    if "statement timeout" in (exc.diag.message_primary or ""):
        return "statement_timeout"
    return "a cancel request from another session (pg_cancel_backend)"


# What the server raises when one of its limits ends a write.
_LIMITS = (
    psycopg.errors.QueryCanceled,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.IdleInTransactionSessionTimeout,
    psycopg.errors.TransactionTimeout,
)

# The writer's own limits for its transaction: a statement, lock or idle timeout meant
# for the application's sessions (set for the role or the database) must not cancel a
# COPY that is making progress; telling a hung write is the writer's job. SET LOCAL ends
# with the transaction, so a connection a pooler shares keeps nothing of it.
_OWN_LIMITS = (
    "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0;"
    " SET LOCAL idle_in_transaction_session_timeout = 0"
)
_OWN_LIMITS_17 = _OWN_LIMITS + "; SET LOCAL transaction_timeout = 0"  # new in PostgreSQL 17


def classify(exc: BaseException) -> Failure:
    # Class 22 (data exception) and 23 (integrity constraint) are about the rows;
    # everything else — connection loss, a missing table, a missing privilege — is
    # about the server or its set-up and may heal, so the rows are kept.
    if isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError):
        return Failure.REJECT
    if isinstance(exc, UnicodeEncodeError | ValueError | TypeError):
        return Failure.REJECT  # raised by the adapters while dumping one row
    if isinstance(exc, ServerLimit):
        return Failure.SHRINK
    return Failure.RETRY


def explain(exc: BaseException) -> str:
    """One line about ``exc`` for the diagnostics log, with a hint where one helps."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    if isinstance(exc, SCHEMA_MISSING) and "llamalog migrate" not in text:
        text += " (is the schema migrated? run `llamalog migrate`)"
    return text


# Why writes fail, for the outage's warnings: by class, then by the text of a failed
# connection (libpq's and the server's words, which carry no SQLSTATE). Checked in order.
# A server that stops, restarts or cannot be reached is one reason, whatever the stage
# (connection lost, refused, starting up): a restart is one warning, not three.
_UNREACHABLE = "the server cannot be reached"
_REASON_BY_CLASS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (psycopg.errors.ReadOnlySqlTransaction, "the database is read-only"),
    (psycopg.errors.TooManyConnections, "the server has too many clients"),
    (
        (psycopg.errors.InvalidAuthorizationSpecification, psycopg.errors.InvalidPassword),
        "authentication failed",
    ),
    (psycopg.errors.InsufficientPrivilege, "the logger's role lacks a privilege"),
    (SCHEMA_MISSING, "the schema is not migrated"),
    (
        (
            psycopg.errors.CannotConnectNow,
            psycopg.errors.AdminShutdown,
            psycopg.errors.CrashShutdown,
        ),
        _UNREACHABLE,
    ),
)
_REASON_BY_TEXT: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"too many clients|remaining connection slots"), "the server has too many clients"),
    (
        re.compile(r'authentication failed|no pg_hba\.conf entry|role "[^"]*" does not exist'),
        "authentication failed",
    ),
    (re.compile(r"read-only"), "the database is read-only"),
)


def reason(exc: BaseException) -> str:
    """Why a write failed, in a few words: what the outage warnings compare, so that a
    change (a server that came back read-only, or full) is reported."""
    if isinstance(exc, ServerLimit):
        return f"{exc.setting} cancels writes"
    if isinstance(exc, _LIMITS):
        return "the write was cancelled"
    words = _look_up(exc, _REASON_BY_CLASS, _REASON_BY_TEXT)
    if words is not None:
        return words
    if isinstance(exc, psycopg.OperationalError):
        return _UNREACHABLE  # lost, refused, timed out, starting up, shutting down
    return type(exc).__name__


def _look_up(
    exc: BaseException,
    by_class: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...],
    by_text: tuple[tuple[re.Pattern[str], str], ...],
) -> str | None:
    """The words for ``exc``: by its class, else (a failed connection) by its text."""
    for kinds, words in by_class:
        if isinstance(exc, kinds):
            return words
    if isinstance(exc, psycopg.OperationalError):
        text = str(exc).lower()
        for pattern, words in by_text:
            if pattern.search(text):
                return words
    return None


def _holds_jobs(rows: Sequence[tuple[object, ...]]) -> bool:
    """Whether ``rows`` hold a job record's row. The writer's own batches answer without
    being encoded first (``holds_jobs()``), so that encoding still overlaps the COPY."""
    known = getattr(rows, "holds_jobs", None)
    if known is not None:
        return bool(known())
    return any(row[1] == JOB for row in rows)


# What waiting will not cure, and what will: the server's word for a missing database or
# a refused login comes as the text of a failed connection (no SQLSTATE), so it is read
# from the text; English is what libpq and the server say unless configured otherwise.
_FIX_BY_CLASS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (SCHEMA_MISSING, "migrate the schema: run `llamalog migrate`"),
    (psycopg.errors.InvalidCatalogName, "create the database, or fix dbname in the DSN"),
    (
        psycopg.errors.InvalidAuthorizationSpecification,
        "fix the user or password in the DSN (or in the password file)",
    ),
    (psycopg.errors.InvalidPassword, "fix the password in the DSN (or in the password file)"),
    (psycopg.errors.InsufficientPrivilege, "grant the logger's role INSERT on the tables"),
)
_FIX_BY_TEXT: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"failed to resolve host|could not translate host name|name or service not"),
        "fix the host name in the DSN",
    ),
    (re.compile(r'database "[^"]*" does not exist'), "create the database, or fix the DSN"),
    (re.compile(r'role "[^"]*" does not exist'), "create the role, or fix the user in the DSN"),
    (
        re.compile(r"password authentication failed|authentication failed|no pg_hba.conf entry"),
        "fix the user or password in the DSN, or the server's pg_hba.conf",
    ),
)


def needs_fix(exc: BaseException) -> str | None:
    """What someone must do about a write that failed with ``exc``, when waiting will not
    cure it (a host that does not resolve, a refused login, a missing database or
    schema); ``None`` for what may heal by itself (a server down or restarting)."""
    return _look_up(exc, _FIX_BY_CLASS, _FIX_BY_TEXT)


class BatchSink:
    """Writes batches of rows into ``{schema}.llama_log`` (events) and
    ``{schema}.llama_job`` (job records) with COPY, one transaction per batch.

    Given a DSN, it keeps one connection of its own, in autocommit, made again by the
    writer's own retry schedule after any failure: a pool's reconnect backoff (1 s
    doubling) would decide how soon writing resumes after an outage. Given a pool
    (``pool=``), it borrows a connection per batch and leaves the pool to its owner.

    Before its first write on a new connection (with a pool: its first write, and the
    first after any failure) it checks that the schema has ``llama_job``: on an older
    schema a batch would partly fail row by row (job rows, new categories) and be
    dead-lettered, where it should wait, whole, for ``llamalog migrate``.
    """

    def __init__(
        self,
        *,
        conninfo: str | None = None,
        pool: ConnectionPool[Any] | None = None,
        schema: str = DEFAULT_SCHEMA,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        if (conninfo is None) == (pool is None):
            raise ConfigurationError("give either a DSN or a pool")
        if conninfo is not None:
            check_conninfo(conninfo)
        self._conninfo = conninfo
        self._connect_options = dict(connect_options or {})  # checked by the caller
        self._pool: ConnectionPool[Any] | None = pool
        self._own: psycopg.Connection[Any] | None = None
        self._active: psycopg.Connection[Any] | None = None  # the one a write is using
        self._cancel_asked = False  # cancel() was called during the write in progress
        self._pool_checked = False  # the pool's schema was checked since its last failure
        self._pid = os.getpid()
        self._handed = 0  # rows handed to COPY, ever: moves while the network takes them
        self._server = self._server_progress()
        self.schema = validate_schema(schema)
        self._copy = _copy_statement(schema, "llama_log", COLUMNS)
        self._copy_jobs = _copy_statement(schema, "llama_job", JOB_COLUMNS)
        self._mark_replay = sql.SQL(
            "INSERT INTO {}.llama_log_spill_replays (spill_id, events) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING"
        ).format(sql.Identifier(schema))
        self._mark_replays = sql.SQL(
            "INSERT INTO {}.llama_log_spill_replays (spill_id, events)"
            " SELECT * FROM unnest(%s::text[], %s::integer[]) ON CONFLICT DO NOTHING"
        ).format(sql.Identifier(schema))

    def target(self) -> dict[str, str]:
        """Where rows go: host, port, database and schema (never a password)."""
        conninfo = self._conninfo if self._conninfo is not None else self._pool_conninfo()
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError:
            params = {}
        return {
            "host": str(params.get("host") or params.get("hostaddr") or "localhost"),
            "port": str(params.get("port") or "5432"),
            "dbname": str(params.get("dbname") or params.get("user") or ""),
            "schema": self.schema,
        }

    def _pool_conninfo(self) -> str:
        conninfo = getattr(self._pool, "conninfo", "")
        return conninfo if isinstance(conninfo, str) else ""

    def _connect(self) -> psycopg.Connection[Any]:
        options = writer_options(self._conninfo or "", self._connect_options)
        try:
            return psycopg.connect(self._conninfo or "", **options)
        except psycopg.Error:
            raise
        except Exception as exc:
            # Not about any row (a bad connection option): the events are kept while the
            # diagnostics say why, instead of being taken for rows the server refused.
            raise psycopg.OperationalError(f"cannot connect: {type(exc).__name__}: {exc}") from exc

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one write: our own (in autocommit), or one borrowed from the
        pool (in a transaction the pool commits when the block ends). Either way one COPY
        is atomic."""
        if self._pool is not None:
            try:
                with self._pool.connection(timeout=_GETCONN_TIMEOUT) as conn:
                    self._active = conn
                    try:
                        if not self._pool_checked:
                            self._check_schema(conn)
                            self._pool_checked = True
                        yield conn
                    except BaseException:
                        self._pool_checked = False  # the failure may be a schema dropped
                        raise
                    finally:
                        self._active = None
            except PoolTimeout as exc:
                raise psycopg.OperationalError(
                    f"no connection from the pool within {_GETCONN_TIMEOUT:g}s"
                ) from exc
            return
        conn = self._own
        if conn is None or conn.closed:
            conn = self._connect()
            try:
                self._check_schema(conn)
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.close()
                raise
            self._own = conn
        self._active = conn
        try:
            yield conn
        except BaseException:
            # Whatever state the failure left the session in, the next batch gets a new one.
            self._own = None
            with contextlib.suppress(Exception):
                conn.close()
            raise
        finally:
            self._active = None

    def _check_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Raise ``UndefinedTable`` (a reason to keep the rows and retry) naming
        ``llamalog migrate`` if the schema has no ``llama_job``. One query per connection."""
        row = conn.execute(_HAS_JOB_TABLE, (self.schema,)).fetchone()
        if row is None or row[0] is None:
            raise psycopg.errors.UndefinedTable(
                f"{self.schema}.llama_job does not exist: the schema is older than this "
                "llamalogger; run `llamalog migrate`"
            )

    def _copy_rows(self, conn: psycopg.Connection[Any], rows: Iterable[tuple[object, ...]]) -> None:
        with conn.cursor() as cur, cur.copy(self._copy) as copy:
            copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)
                self._handed += 1

    def _copy_mixed(
        self, conn: psycopg.Connection[Any], rows: Iterable[tuple[object, ...]]
    ) -> None:
        """Events into llama_log, job records into llama_job: one COPY each, in the
        transaction the caller holds. The job rows are set aside as the events stream."""
        jobs: list[tuple[object, ...]] = []
        with conn.cursor() as cur:
            with cur.copy(self._copy) as copy:
                copy.set_types(COPY_TYPES)
                for row in rows:
                    if row[1] == JOB:
                        jobs.append(row)
                    else:
                        copy.write_row(row)
                    self._handed += 1
            if jobs:
                with cur.copy(self._copy_jobs) as copy:
                    copy.set_types(JOB_COPY_TYPES)
                    for row in jobs:
                        copy.write_row(row[:1] + row[2:])  # without the marker

    @contextmanager
    def _write_transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection in a transaction under the writer's own limits (``_OWN_LIMITS``);
        a limit of the server's that cancels it anyway raises ``ServerLimit``."""
        self._cancel_asked = False
        try:
            with self._connection() as conn, conn.transaction():
                limits = _OWN_LIMITS_17 if conn.info.server_version >= 170000 else _OWN_LIMITS
                conn.execute(limits)
                yield conn
        except _LIMITS as exc:
            if self._cancel_asked:
                raise  # ours: the write hung
            raise ServerLimit(_limit_of(exc), exc) from exc

    def write(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Write ``rows`` in one transaction; raises what the server said.

        Events go into one COPY, job records among them into a second one in the same
        transaction."""
        with self._write_transaction() as conn:
            if _holds_jobs(rows):
                self._copy_mixed(conn, rows)
            else:
                self._copy_rows(conn, rows)

    def write_replays(self, files: Sequence[SpilledRows]) -> set[str]:
        """Write the rows of spill files, in their order, in one transaction, exactly once.

        Each file's id goes into ``llama_log_spill_replays`` in the same transaction as its
        rows; a file whose id is there already (an earlier replay committed, then its file
        was not removed) is not written again, and its id is returned. The rows of all the
        files stream into one COPY (their job records into a second) as they are taken.
        """
        ids = [spill_id for spill_id, _ in files]
        counts = [len(rows) for _, rows in files]
        # The marks are never prepared: a statement must not outlive a pooler's transaction.
        with self._write_transaction() as conn:
            # One statement marks them all; it marks fewer only after a crash between a
            # replay's commit and the removal of its files.
            marked = conn.execute(self._mark_replays, (ids, counts), prepare=False)
            if marked.rowcount == len(files):
                self._copy_mixed(conn, itertools.chain.from_iterable(r for _, r in files))
                return set()
            raise psycopg.Rollback  # then mark them one by one, to know which
        stored_before: set[str] = set()
        with self._write_transaction() as conn:
            fresh = []
            for spill_id, rows in files:
                marked = conn.execute(self._mark_replay, (spill_id, len(rows)), prepare=False)
                if marked.rowcount:
                    fresh.append(rows)
                else:
                    stored_before.add(spill_id)
            self._copy_mixed(conn, itertools.chain.from_iterable(fresh))
        return stored_before

    @contextmanager
    def separate_connection(self, timeout: float) -> Iterator[psycopg.Connection[Any]]:
        """A connection made as the writer's is (or one borrowed from the pool), apart from
        the writer's own, whose thread may be using it; for ``LlamaLogger.check()``.
        Connecting waits at most ``timeout`` seconds (libpq's least is 2)."""
        if self._pool is not None:
            with self._pool.connection(timeout=timeout) as conn:
                yield conn
            return
        options: dict[str, Any] = {"prepare_threshold": None}  # a pooler's connection too
        if "application_name" not in conninfo_to_dict(self._conninfo or ""):  # the DSN wins
            options["application_name"] = "llamalogger-check"
        options.update(self._connect_options)
        # The caller's bound, whatever the DSN says: it is what the caller asked for.
        options["connect_timeout"] = max(CONNECT_TIMEOUT, math.ceil(timeout))
        with psycopg.connect(self._conninfo or "", **options) as conn:
            yield conn

    def describe_failure(self, exc: BaseException) -> str:
        """One line about a failed connection: where, why (no password) and the fix."""
        target = self.target()
        where = f"host={target['host']} port={target['port']} dbname={target['dbname']}"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if self._conninfo:
            reason = scrub(reason, self._conninfo)
        fix = needs_fix(exc) or "check that the server runs and that this host can reach it"
        return f"llamalogger cannot connect to {where}: {reason} (to fix: {fix})"

    def cancel(self, timeout: float = _CANCEL_TIMEOUT) -> None:
        """Ask the server to cancel the write in progress (from another thread)."""
        conn = self._active
        self._cancel_asked = True  # what the write raises next is our doing, not a limit
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.cancel_safe(timeout=timeout)

    def progress(self) -> int:
        """A number that changes while the write in progress moves: each row handed to its
        COPY, and each change the server shows in that COPY's progress (a slow server is
        still working through rows handed long ago). Never waits."""
        conn = self._active
        pid = None
        if conn is not None:
            with contextlib.suppress(Exception):  # closed under us: no write to watch
                pid = conn.info.backend_pid
        return self._handed + self._server.seen(pid)

    def _server_progress(self) -> ServerProgress:
        # With a pool, each look borrows a connection for a moment only: the pool is the
        # user's, and a connection held for seconds could be one their own code waits for.
        return ServerProgress(self.separate_connection, hold=self._pool is None)

    def after_fork_in_child(self) -> None:
        """Forget a connection inherited from the parent: its socket is the parent's.

        psycopg never closes a connection made in another process, so dropping it is safe.
        """
        if self._pid != os.getpid():
            self._own = None
            self._active = None
            self._server = self._server_progress()  # its thread is the parent's
        self._pid = os.getpid()

    def close(self) -> None:
        self._server.close()
        conn, self._own = self._own, None
        if conn is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                conn.close()

    @property
    def label(self) -> str:
        """Where rows go, for a repr: the DSN without its password, or the shared pool."""
        return masked_conninfo(self._conninfo) if self._conninfo else "<shared pool>"

    def __repr__(self) -> str:
        target = masked_conninfo(self._conninfo) if self._conninfo else "<borrowed pool>"
        return f"<BatchSink schema={self.schema!r} {target}>"


def _copy_statement(schema: str, table: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(schema),
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
    )


# The schema's name is quoted by the server: the check is parameterised like any query.
_HAS_JOB_TABLE = sql.SQL("SELECT to_regclass(quote_ident(%s) || '.llama_job')")
