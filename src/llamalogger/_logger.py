"""``LlamaLogger``: the facade that ties the job context, records and the writer together."""

from __future__ import annotations

import os
from time import time_ns as _time_ns
from types import TracebackType
from typing import Any

from psycopg_pool import ConnectionPool

from ._context import JobContext, JobScope, _current
from ._errors import ConfigurationError
from ._postgres import BatchSink, masked_conninfo
from ._records import LEVELS, PG_EPOCH_US, Category, Record, coerce_entity
from ._writer import FullPolicy, Writer

__all__ = ["LlamaLogger"]

_CATEGORY_BY_NAME = {category.value: category.value for category in Category}


_LEVEL_BY_NAME = {level: level for level in LEVELS}


def _checked_level(level: object) -> str:
    """The level named by ``level`` as a plain str; ``ValueError`` if there is none."""
    try:
        return _LEVEL_BY_NAME[level]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(f"level must be one of {sorted(LEVELS)}, not {level!r:.40}") from None


def _message_text(message: object) -> str:
    # On the caller's thread: a KeyboardInterrupt here may be a real Ctrl-C, so only
    # Exception becomes a stand-in. A str subclass is copied to a plain str, so that its
    # own methods never run in the writer.
    try:
        text = str(message)
    except Exception as exc:
        return f"<unprintable {type(message).__name__}: {type(exc).__name__}>"
    return text if type(text) is str else str.__str__(text)


class LlamaLogger:
    """Records catalogue events as rows of ``{schema}.llama_log``, written in the background.

    ``LlamaLogger(dsn)`` owns a connection pool; ``LlamaLogger(pool=pool)`` shares an
    existing ``psycopg_pool.ConnectionPool``; ``LlamaLogger()`` reads ``LLAMALOG_DSN``.
    The schema defaults to ``$LLAMALOG_SCHEMA`` or ``llamalog``.

    Logging calls only queue the event: they never wait for the database and never
    raise because of it. ``flush()`` waits for what was logged; ``close()`` (or leaving
    a ``with LlamaLogger(...)`` block, or interpreter exit) writes the rest and stops.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        schema: str | None = None,
        queue_size: int = 100_000,
        batch_size: int = 20_000,
        flush_interval: float = 0.2,
        on_full: FullPolicy = "drop",
        block_timeout: float = 1.0,
        exit_timeout: float = 10.0,
        dead_letter_path: str | os.PathLike[str] | None = None,
        spill_dir: str | os.PathLike[str] | None = None,
        flush_on_outer_job_exit: bool | None = None,
        pool_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if dsn is not None and pool is not None:
            raise ConfigurationError("pass either a DSN or a pool, not both")
        if dsn is None and pool is None:
            dsn = os.environ.get("LLAMALOG_DSN") or None
            if dsn is None:
                raise ConfigurationError(
                    "no database given: pass a DSN or pool=, or set LLAMALOG_DSN"
                )
        if schema is None:
            schema = os.environ.get("LLAMALOG_SCHEMA") or "llamalog"
        self._target = masked_conninfo(dsn) if dsn is not None else "<shared pool>"
        self._sink = BatchSink(conninfo=dsn, pool=pool, schema=schema, pool_kwargs=pool_kwargs)
        self.schema = self._sink.schema
        self._sink.open()
        self._writer = Writer(
            self._sink,
            queue_size=queue_size,
            batch_size=batch_size,
            flush_interval=flush_interval,
            on_full=on_full,
            block_timeout=block_timeout,
            exit_timeout=exit_timeout,
            dead_letter_path=dead_letter_path,
            spill_dir=spill_dir,
        )
        self._flush_on_outer_job_exit = flush_on_outer_job_exit
        self._created_in_pid = os.getpid()
        self._put = self._writer.put  # bound once: the hot path skips two lookups

    # --- jobs --------------------------------------------------------------------

    def job(
        self,
        name: str | None = None,
        *,
        job_id: str | None = None,
        parent: JobContext | None = None,
    ) -> JobScope:
        """A job: ``with logger.job("import-album") as job:`` or ``@logger.job("enrich")``.

        Inside another job it becomes that job's child; ``parent=`` (a ``JobContext``,
        e.g. from ``JobContext.from_headers``) makes it the child of a job elsewhere.
        ``job_id`` defaults to a new time-ordered id; an invalid one raises ``ValueError``.
        """
        return JobScope(name, job_id, parent, self._outermost_job_ended)

    def _outermost_job_ended(self) -> None:
        flush = self._flush_on_outer_job_exit
        if flush is None:  # the default: on in a forked child, off in the parent
            flush = os.getpid() != self._created_in_pid
        if flush:
            self._writer.flush(self._writer.exit_timeout)

    # --- events (the hot path: no I/O, no formatting, no JSON) --------------------

    def log(
        self,
        category: Category | str,
        message: str,
        /,
        *,
        entity: object = None,
        related: object = None,
        level: str = "info",
        **details: Any,
    ) -> None:
        """Record one event in the current job.

        ``entity`` is the subject and ``related`` the object of the event, each a
        ``(type, id)`` pair or an ``Entity``; keyword arguments go to ``details`` (jsonb).
        Bad arguments (unknown category or level, malformed entity) raise ``ValueError``;
        anything about the data itself is sanitised in the background, never raised.
        """
        # _enqueue's work, inlined: one call fewer is a tenth of this call's cost.
        try:
            category_value = _CATEGORY_BY_NAME[category]
            level = _LEVEL_BY_NAME[level]  # also makes a str subclass the plain str
        except (KeyError, TypeError):
            category_value = Category.parse(category).value
            level = _checked_level(level)
        if type(message) is not str:
            message = _message_text(message)
        entity_type = entity_id = related_type = related_id = None
        if entity is not None:
            entity_type, entity_id = coerce_entity(entity)
        if related is not None:
            related_type, related_id = coerce_entity(related, "related")
        logged_at = _time_ns() // 1000 - PG_EPOCH_US
        job = _current.get()
        if job is None:
            self._put((
                logged_at, category_value, level, message, None, None, None, None,
                entity_type, entity_id, related_type, related_id, details or None,
            ))  # fmt: skip
        else:
            self._put((
                logged_at, category_value, level, message,
                job.job_id, job.parent_job_id, job.root_job_id, job.name,
                entity_type, entity_id, related_type, related_id, details or None,
            ))  # fmt: skip

    def created(
        self, entity: object, message: str | None = None, *, level: str = "info", **details: Any
    ) -> None:
        """A ``CREATED`` event for ``entity``, e.g. ``logger.created(("album", 12))``.

        The message defaults to ``"<type> <id> created"``.
        """
        if entity is None:
            coerce_entity(entity)  # raises: a CREATED event needs its entity
        if message is not None and type(message) is not str:
            message = _message_text(message)
        self._enqueue("CREATED", message, entity, None, level, details)

    def linked(
        self,
        subject: object,
        obj: object,
        message: str | None = None,
        *,
        level: str = "info",
        **details: Any,
    ) -> None:
        """A ``LINKED`` event: ``subject`` was linked to ``obj`` (artist 7 linked to track 9).

        The message defaults to ``"<type> <id> linked to <type> <id>"``.
        """
        if subject is None or obj is None:
            coerce_entity(subject)  # raises: a LINKED event needs both ends
            coerce_entity(obj, "related")
        if message is not None and type(message) is not str:
            message = _message_text(message)
        self._enqueue("LINKED", message, subject, obj, level, details)

    def _enqueue(  # noqa: PLR0917 - positional on purpose: the hot path
        self,
        category: str,
        message: str | None,
        entity: object,
        related: object,
        level: str,
        details: dict[str, Any],
    ) -> None:
        """Validate what is cheap to validate, build the record, queue it: nothing else.

        A ``None`` message is composed by the writer (see ``_records.default_message``).
        """
        level = _checked_level(level)
        entity_type = entity_id = related_type = related_id = None
        if entity is not None:
            entity_type, entity_id = coerce_entity(entity)
        if related is not None:
            related_type, related_id = coerce_entity(related, "related")
        logged_at = _time_ns() // 1000 - PG_EPOCH_US
        job = _current.get()
        record: Record
        if job is None:
            record = (
                logged_at, category, level, message, None, None, None, None,
                entity_type, entity_id, related_type, related_id, details or None,
            )  # fmt: skip
        else:
            record = (
                logged_at, category, level, message,
                job.job_id, job.parent_job_id, job.root_job_id, job.name,
                entity_type, entity_id, related_type, related_id, details or None,
            )  # fmt: skip
        self._put(record)

    # --- life cycle --------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged before this call is committed (or rejected).

        Returns ``False`` if that took longer than ``timeout`` seconds.
        """
        return self._writer.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, stop the writer and close an owned pool. Safe to call twice.

        If the database stays unreachable, gives up after ``timeout`` seconds (default
        ``exit_timeout``) and counts what was left as dropped. Returns ``True`` when
        nothing was left unwritten.
        """
        return self._writer.close(timeout)

    def stats(self) -> dict[str, int]:
        """Counters, read without waiting for the writer.

        ``enqueued`` accepted by ``log()``; ``written`` committed; ``dropped`` lost (queue
        full, logged after close, or unwritable at close); ``retried`` failed attempts
        that were retried; ``rejected`` refused by the database and reported;
        ``sanitised`` stored in a cleaned form; ``batches`` batches handled; ``spilled``
        kept in spill files during an outage; ``replayed`` written from spill files (also
        files left by earlier processes); ``queue_depth`` waiting.
        """
        return self._writer.stats()

    def __enter__(self) -> LlamaLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LlamaLogger schema={self.schema!r} {self._target}>"
