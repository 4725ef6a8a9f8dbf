"""PostgreSQL for the writer: pool ownership, one COPY per batch, and what an error means."""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from ._errors import ConfigurationError
from ._records import COLUMNS, COPY_TYPES

__all__ = [
    "BatchSink",
    "Failure",
    "check_conninfo",
    "classify",
    "explain",
    "masked_conninfo",
    "scrub",
    "validate_schema",
]

# Waiting longer for a connection than this only delays the retry loop's own backoff
# and the reaction to close().
_GETCONN_TIMEOUT = 2.0
_MAX_IDENTIFIER_LENGTH = 63  # PostgreSQL's NAMEDATALEN - 1


def validate_schema(schema: object) -> str:
    """``schema`` if it is a usable schema name, else ``ConfigurationError``."""
    if not isinstance(schema, str) or not schema:
        raise ConfigurationError(f"schema must be a non-empty str, not {schema!r}")
    # PostgreSQL would silently truncate a longer name; refuse it instead.
    if len(schema.encode("utf-8", "surrogatepass")) > _MAX_IDENTIFIER_LENGTH:
        raise ConfigurationError(
            f"schema name {schema!r} is longer than PostgreSQL's "
            f"{_MAX_IDENTIFIER_LENGTH}-byte identifier limit"
        )
    if "\x00" in schema:
        raise ConfigurationError("schema name must not contain NUL characters")
    return schema


def masked_conninfo(conninfo: str) -> str:
    """``conninfo`` with any password replaced by ``***``, for reprs and messages."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparsable conninfo>"
    if "password" in params:
        params["password"] = "***"  # noqa: S105 - a mask, not a secret
    return make_conninfo("", **params)


def check_conninfo(conninfo: str) -> None:
    """``ConfigurationError`` if ``conninfo`` cannot be parsed.

    The parser's own message quotes the offending part, which may be the password, so it
    is not passed on.
    """
    try:
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        raise ConfigurationError(
            "invalid DSN: it could not be parsed (it is not shown, as it may hold a password)"
        ) from None


def scrub(text: str, conninfo: str) -> str:
    """``text`` with ``conninfo`` and any password in it replaced by their masked form."""
    text = text.replace(conninfo, masked_conninfo(conninfo))
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.ProgrammingError:
        return text
    if isinstance(password, str) and password:
        text = text.replace(password, "***")
    return text


class Failure(enum.Enum):
    """What the writer should do about an exception from ``BatchSink.write``."""

    RETRY = "retry"  # the server or the network: keep the batch, try again later
    REJECT = "reject"  # the data: some row of the batch can never be written


def classify(exc: BaseException) -> Failure:
    # Class 22 (data exception) and 23 (integrity constraint) are about the rows;
    # everything else — connection loss, a missing table, a missing privilege — is
    # about the server or its set-up and may heal, so the rows are kept.
    if isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError):
        return Failure.REJECT
    if isinstance(exc, UnicodeEncodeError | ValueError | TypeError):
        return Failure.REJECT  # raised by the adapters while dumping one row
    return Failure.RETRY


def explain(exc: BaseException) -> str:
    """One line about ``exc`` for the diagnostics log, with a hint where one helps."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        text += " (is the schema migrated? run `llamalog migrate`)"
    return text


class BatchSink:
    """Writes batches of rows into ``{schema}.llama_log`` with COPY through a pool.

    An owned pool is created from a DSN and closed by ``close()``; a borrowed pool
    (``pool=``) is used as it is and left open for its owner.
    """

    def __init__(
        self,
        *,
        conninfo: str | None = None,
        pool: ConnectionPool[Any] | None = None,
        schema: str = "llamalog",
        pool_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if (conninfo is None) == (pool is None):
            raise ConfigurationError("give either a DSN or a pool")
        if conninfo is not None:
            check_conninfo(conninfo)
        self._conninfo = conninfo
        self._pool_kwargs = dict(pool_kwargs or {})
        self._owns_pool = pool is None
        self._pool: ConnectionPool[Any] | None = pool
        self._pid = os.getpid()
        self.schema = validate_schema(schema)
        self._copy = sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(schema),
            sql.Identifier("llama_log"),
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
        )
        self._mark_replay = sql.SQL(
            "INSERT INTO {}.llama_log_spill_replays (spill_id, events) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING"
        ).format(sql.Identifier(schema))

    def _make_pool(self) -> ConnectionPool[Any]:
        options: dict[str, Any] = {
            "min_size": 1,
            "max_size": 2,
            "name": "llamalogger",
            # A connection broken by a server restart is noticed at checkout, not by
            # a failed COPY halfway through a batch.
            "check": ConnectionPool.check_connection,
            # A COPY in autocommit is its own transaction: no COMMIT round trip per batch.
            "kwargs": {"application_name": "llamalogger", "autocommit": True},
        }
        options.update(self._pool_kwargs)
        pool: ConnectionPool[Any] = ConnectionPool(self._conninfo or "", open=False, **options)
        # Not waiting: a server that is down at start-up must not stop the worker.
        pool.open(wait=False)
        return pool

    def open(self) -> None:
        """Create the owned pool now (connections are made in the background)."""
        if self._pool is None:
            self._pool = self._make_pool()

    def after_fork_in_child(self) -> None:
        """Forget an owned pool inherited from the parent: its sockets are the parent's."""
        if self._owns_pool and self._pid != os.getpid():
            self._pool = None  # never closed here: closing would end the parent's sessions
        self._pid = os.getpid()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection: in autocommit (as the writer's own pool makes them), or in
        a transaction that the pool commits when the block ends. Either way one COPY is
        atomic."""
        if self._pool is None:
            self._pool = self._make_pool()
        try:
            with self._pool.connection(timeout=_GETCONN_TIMEOUT) as conn:
                yield conn
        except PoolTimeout as exc:
            raise psycopg.OperationalError(
                f"no connection to the database within {_GETCONN_TIMEOUT:g}s"
            ) from exc

    def _copy_rows(self, conn: psycopg.Connection[Any], rows: Iterable[tuple[object, ...]]) -> None:
        with conn.cursor() as cur, cur.copy(self._copy) as copy:
            copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)

    def write(self, rows: Iterable[tuple[object, ...]]) -> None:
        """Write ``rows`` with one COPY in one transaction; raises what the server said."""
        with self._connection() as conn:
            self._copy_rows(conn, rows)

    def write_replay(self, spill_id: str, rows: Sequence[tuple[object, ...]]) -> bool:
        """Write the rows of one spill file, exactly once.

        The file's id goes into ``llama_log_spill_replays`` in the same transaction as its
        rows; returns ``False`` without writing if that id is already there (an earlier
        replay committed but its file was not deleted).
        """
        with self._connection() as conn, conn.transaction():
            if conn.execute(self._mark_replay, (spill_id, len(rows))).rowcount == 0:
                return False
            self._copy_rows(conn, rows)
        return True

    def close(self) -> None:
        if self._owns_pool and self._pool is not None and self._pid == os.getpid():
            self._pool.close()
        self._pool = None

    def __repr__(self) -> str:
        target = masked_conninfo(self._conninfo) if self._conninfo else "<borrowed pool>"
        return f"<BatchSink schema={self.schema!r} {target}>"
