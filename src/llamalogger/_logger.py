"""``LlamaLogger``: the facade that ties the job context, records and the writer together."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import traceback
import warnings
from collections.abc import Mapping
from time import time_ns as _time_ns
from types import TracebackType
from typing import Any, Self

from psycopg_pool import ConnectionPool

from . import _bound_context
from ._conninfo import DSN_ENV, dsn_from_env, schema_from_env
from ._context import (
    MAX_JOB_NAME_LENGTH,
    JobContext,
    JobScope,
    _current,
    current_pid,
    validate_job_id,
)
from ._errors import ConfigurationError
from ._pipeline import (
    DEFAULT,
    OWNED_CONNECT_OPTIONS,
    FullPolicy,
    Settings,
    Sink,
    checked_connect_options,
    deliver_all,
    diagnostics,
    open_writer,
    postgres_sink,
    sink_label,
)
from ._probe import probe
from ._records import JOB, LEVELS, PG_EPOCH_US, Category, JobStatus, coerce_entity

__all__ = ["LlamaLogger"]

_CATEGORY_BY_NAME = {category.value: category.value for category in Category}
_FAILED = Category.FAILED.value
_CREATED = Category.CREATED.value
_LINKED = Category.LINKED.value


_LEVEL_BY_NAME = {level: level for level in LEVELS}
_LEVEL_BY_NAME["warn"] = "warning"  # as the logging module and structlog spell it too

# Where job records say a job ran. The host name is read once: it is the same in forked children.
_HOST = socket.gethostname()


def _checked_level(level: object) -> str:
    """The level named by ``level`` as a plain str; ``ValueError`` if there is none."""
    try:
        return _LEVEL_BY_NAME[level]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(
            f"level must be one of {sorted(LEVELS)} (or 'warn'), not {level!r:.40}"
        ) from None


def _exception_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _job_status(exc: BaseException | None) -> str:
    if exc is None:
        return JobStatus.SUCCEEDED.value
    if isinstance(exc, Exception):
        return JobStatus.FAILED.value
    # Cancellation, Ctrl-C, SystemExit, GeneratorExit: stopped from outside, not broken.
    return JobStatus.CANCELLED.value


def _message_text(message: object) -> str:
    # On the caller's thread: a KeyboardInterrupt here may be a real Ctrl-C, so only
    # Exception becomes a stand-in. A str subclass is copied to a plain str, so that its
    # own methods never run in the writer.
    try:
        text = str(message)
    except Exception as exc:
        return f"<unprintable {type(message).__name__}: {type(exc).__name__}>"
    return text if type(text) is str else str.__str__(text)


def _connect_options(
    connect_options: object, pool_kwargs: dict[str, Any] | None, pool: object
) -> dict[str, Any]:
    """The writer's connection options: ``connect_options``, or those of the deprecated
    ``pool_kwargs`` (its ``kwargs`` entry, without the options the logger sets itself)."""
    if pool_kwargs is None:
        if connect_options is not None and pool is not None:
            raise ConfigurationError(
                "connect_options: with pool= the connections are the pool's; configure them there"
            )
        return checked_connect_options(connect_options)
    if connect_options is not None:
        raise ConfigurationError("pass connect_options only: pool_kwargs is deprecated")
    given = dict(pool_kwargs.get("kwargs") or {})
    ignored = sorted(set(pool_kwargs) - {"kwargs"}) + sorted(
        key for key in given if key in OWNED_CONNECT_OPTIONS
    )
    warnings.warn(
        "pool_kwargs is deprecated and will be removed in llamalogger 0.3: pass the "
        "connection's options as connect_options={...} instead; only the options in "
        f"pool_kwargs['kwargs'] that the logger does not set itself are used (ignored: {ignored})",
        DeprecationWarning,
        stacklevel=3,
    )
    kept = {key: value for key, value in given.items() if key not in ignored}
    return checked_connect_options(kept, "pool_kwargs['kwargs']")


class LlamaLogger:
    """Records catalogue events as rows of ``{schema}.llama_log``, written in the background.

    ``LlamaLogger(dsn)`` writes through a connection of its own; ``LlamaLogger(pool=pool)``
    borrows connections from an existing ``psycopg_pool.ConnectionPool``; ``LlamaLogger()``
    reads ``LLAMALOG_DSN``. The schema defaults to ``$LLAMALOG_SCHEMA`` or ``llamalog``.

    Logging calls only queue the event: they never wait for the database and never raise
    because of it (a full queue makes them wait for room while the writer makes progress).
    While the database is unreachable, events are kept in spill files (see ``spill_dir``).
    ``flush()`` waits for what was logged; ``close()`` (or leaving a ``with LlamaLogger(...)``
    block, or interpreter exit) writes the rest and stops.

    Values bound with ``structlog.contextvars.bind_contextvars`` go into the details of
    every event, direct calls included (explicit keyword arguments win), unless
    ``structlog_context=False``.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        schema: str | None = None,
        # The defaults shown are Settings' own: an option left out is left to Settings.
        queue_size: int = DEFAULT.queue_size,
        batch_size: int = DEFAULT.batch_size,
        flush_interval: float = DEFAULT.flush_interval,
        on_full: FullPolicy = DEFAULT.on_full,
        block_timeout: float = DEFAULT.block_timeout,
        exit_timeout: float = DEFAULT.exit_timeout,
        dead_letter_path: str | os.PathLike[str] | None = DEFAULT.dead_letter_path,
        spill_dir: str | os.PathLike[str] | bool | None = DEFAULT.spill_dir,
        spill_max_bytes: int = DEFAULT.spill_max_bytes,
        flush_on_outer_job_exit: bool | None = DEFAULT.flush_on_outer_job_exit,
        log_failed_jobs: bool = DEFAULT.log_failed_jobs,
        connect_options: Mapping[str, Any] | None = None,
        pool_kwargs: dict[str, Any] | None = None,
        structlog_context: bool = True,
    ) -> None:
        # Everything is checked before any thread, connection or directory exists, so a
        # mistake leaves nothing behind.
        if dsn is not None and pool is not None:
            raise ConfigurationError("pass either a DSN or a pool, not both")
        if dsn is None and pool is None:
            dsn = dsn_from_env()
            if dsn is None:
                raise ConfigurationError(
                    f"no database given: pass a DSN or pool=, or set {DSN_ENV}"
                )
        settings = Settings.given(
            queue_size=queue_size,
            batch_size=batch_size,
            flush_interval=flush_interval,
            on_full=on_full,
            block_timeout=block_timeout,
            exit_timeout=exit_timeout,
            dead_letter_path=dead_letter_path,
            spill_dir=spill_dir,
            spill_max_bytes=spill_max_bytes,
            flush_on_outer_job_exit=flush_on_outer_job_exit,
            log_failed_jobs=log_failed_jobs,
        )
        sink = postgres_sink(
            dsn=dsn,
            pool=pool,
            schema=schema_from_env(schema),
            connect_options=_connect_options(connect_options, pool_kwargs, pool),
        )
        self._start(sink, settings, structlog_context=structlog_context)

    @classmethod
    def _with_sink(cls, sink: Sink, settings: Settings) -> Self:
        """A logger whose writer hands its batches to ``sink`` instead of PostgreSQL:
        ``llamalogger.testing`` builds its in-memory logger with this."""
        logger = cls.__new__(cls)
        logger._start(sink, settings)
        return logger

    def _start(self, sink: Sink, settings: Settings, *, structlog_context: bool = True) -> None:
        """Wire the logger to ``sink``: the one writer, and the state its calls keep."""
        self._sink = sink
        self._settings = settings
        self.schema = sink.target()["schema"]
        self._target = sink_label(sink)
        self._writer = open_writer(sink, settings)
        self._log_failed_jobs = settings.log_failed_jobs
        # Jobs (by the id of their context) in which a FAILED event was logged, so that
        # leaving them by an exception does not record a second one; emptied on job exit.
        self._failed_in: dict[int, JobContext] = {}
        # How task jobs ended in their queue's view (task_outcome), until their exit.
        self._outcomes: dict[int, tuple[JobContext, str, BaseException | str | None]] = {}
        self._created_in_pid = os.getpid()
        self._put = self._writer.put_apart  # bound once: the hot path skips two lookups
        # structlog's registry of bound contextvars: empty (a free check) until one is bound.
        self._structlog_vars = _bound_context.registry(structlog_context)

    # --- jobs --------------------------------------------------------------------

    def job(
        self,
        name: str | None = None,
        *,
        entity: object = None,
        job_id: str | None = None,
        parent: JobContext | None = None,
        **details: Any,
    ) -> JobScope:
        """A job: ``with logger.job("import-album") as job:`` or ``@logger.job("enrich")``.

        Inside another job it becomes that job's child; ``parent=`` (a ``JobContext``,
        e.g. from ``JobContext.from_headers``) makes it the child of a job elsewhere.
        ``job_id`` defaults to a new time-ordered id; an invalid one raises ``ValueError``.

        ``entity`` (a ``(type, id)`` pair or an ``Entity``) is what the job works on: its
        job record and its automatic ``FAILED`` event carry it. Other keywords are the
        job's context: every event of the job has them in its details (a call's own
        keywords win), and so do the events of jobs nested inside it in this process.
        When the block ends, one job record (``llama_job``) says how and when.
        """
        checked = None if entity is None else coerce_entity(entity)
        return JobScope(
            name,
            job_id,
            parent,
            self._outermost_job_ended,
            self._job_exiting,
            checked,
            details,
        )

    # --- tasks: the seam for task-queue integrations (docs/api.md) -----------------

    def task_job(
        self,
        name: str,
        *,
        job_id: str | None = None,
        parent: JobContext | None = None,
        attempt: int = 1,
        entity: object = None,
        **details: Any,
    ) -> JobScope:
        """The job of one task of a queue: ``with logger.task_job(task.name, job_id=task.id):``.

        ``job_id`` is the queue's own id for the task, so the rows agree with the queue's
        view; ``parent`` is the job that enqueued it (``JobContext.from_untrusted_headers``
        reads it from a message). Both come from a message, so where ``job()`` raises this
        copes: a ``job_id`` that is no valid job id gets a generated one, and a ``name``
        longer than the limit is cut; the task is recorded either way. Leaving it by an
        exception logs one ``FAILED`` event, as ``job()`` does. Its end never waits for
        the database: call ``task_ended()`` where the task is over.

        ``attempt`` numbers the runs of a task its queue retries (1 for the first); each
        attempt leaves its own job record under the same job id. ``entity`` and other
        keywords are the job's, as for ``job()``. How the attempt ended is the job
        block's own outcome unless the integration says otherwise with ``task_outcome()``.
        """
        if not isinstance(name, str):
            raise TypeError(f"task name must be a str, not {type(name).__name__}")
        if type(attempt) is not int or attempt < 1:
            raise ValueError(f"attempt must be an int of at least 1, not {attempt!r:.40}")
        name = name[:MAX_JOB_NAME_LENGTH]
        checked = None if entity is None else coerce_entity(entity)
        on_exit = (
            self._job_exiting
            if attempt == 1
            else functools.partial(self._job_exiting, attempt=attempt)
        )
        valid_id = None
        if job_id is not None:
            # A queue's id that cannot be a job id: the task gets a generated one.
            with contextlib.suppress(ValueError):
                valid_id = validate_job_id(job_id)
        if parent is not None and valid_id is not None and parent.job_id == valid_id:
            # The message names the task itself as its parent (a hostile or confused
            # producer): the task keeps the parent that job had, or becomes a root.
            diagnostics.warning(
                "llamalogger: task %.100r names itself as its parent; its parent is taken "
                "from that job's own (%.100r) instead",
                valid_id,
                parent.parent_job_id,
            )
            parent = (
                None
                if parent.parent_job_id is None
                else JobContext(job_id=parent.parent_job_id, root_job_id=parent.root_job_id)
            )
        return JobScope(name, valid_id, parent, None, on_exit, checked, details)

    def task_outcome(
        self, status: JobStatus | str, *, error: BaseException | str | None = None
    ) -> None:
        """How the current task job ended in its queue's view, for its job record.

        Integrations leave a task's job block normally even when the task failed (the queue
        reports the failure in its own way), so they say here what happened: ``"failed"``
        with the ``error`` (an exception, or the queue's text when the task's process died),
        ``"retried"`` when the queue will run the task again, or ``"cancelled"``. Without a
        current job this does nothing. ``ValueError`` for an unknown status.
        """
        value = JobStatus(status).value
        job = _current.get()
        if job is not None:
            self._outcomes[id(job)] = (job, value, error)

    def task_ended(self) -> None:
        """A task ended: deliver what was logged, or put it in spill files, before returning.

        Task queues end worker processes in ways that skip ``close()`` (``os._exit`` in
        RQ's work horses and Celery's recycled pool processes, a kill between tasks), so
        an integration calls this after each task, outside its job. It delivers every live
        ``LlamaLogger`` of the process, not only this one: a task module's own logger
        counts as much as the integration's. Bounded as at the end of a forked child's
        outermost job: the loggers are delivered side by side, in at most
        ``block_timeout`` + ``exit_timeout`` seconds (the longest of theirs), and only
        when the database does not answer; what is still undelivered then is reported on
        the ``llamalogger`` logger.
        """
        deliver_all()

    def _job_exiting(
        self,
        context: JobContext,
        exc: BaseException | None,
        started_at: int,
        *,
        attempt: int = 1,
    ) -> None:
        """Called while ``context`` is still current, as its block is left: the automatic
        ``FAILED`` event, then the job's record."""
        if (
            exc is not None
            and self._log_failed_jobs
            and isinstance(exc, Exception)  # not GeneratorExit, cancellation, Ctrl-C
            and self._failed_in.get(id(context)) is not context
        ):
            self.log_exception(exc)
        if self._failed_in:
            self._failed_in.pop(id(context), None)
        status = _job_status(exc)
        error: BaseException | str | None = exc
        if self._outcomes:
            said = self._outcomes.pop(id(context), None)
            if said is not None and said[0] is context:
                status = said[1]
                error = said[2] if said[2] is not None else exc
        error_type = error_message = None
        if isinstance(error, BaseException):
            error_type = _exception_name(error)
            error_message = _message_text(error)
        elif error is not None:
            error_message = _message_text(error)
        entity_type, entity_id = context.entity if context.entity is not None else (None, None)
        self._put((
            _time_ns() // 1000 - PG_EPOCH_US, JOB, status, error_message,
            context.job_id, context.parent_job_id, context.root_job_id, context.name,
            entity_type, entity_id, error_type, started_at, attempt, current_pid(), _HOST,
        ), context.details)  # fmt: skip

    def _outermost_job_ended(self) -> None:
        flush = self._settings.flush_on_outer_job_exit
        if flush is None:  # the default: on in a forked child, off in the parent
            flush = current_pid() != self._created_in_pid
        if flush:  # every logger of the process: the job's events may be in any of them
            deliver_all()

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
        try:
            category_value = _CATEGORY_BY_NAME[category]
            level = _LEVEL_BY_NAME[level]  # also makes a str subclass the plain str
        except (KeyError, TypeError):
            category_value = Category.parse(category).value
            level = _checked_level(level)
        if category_value == _FAILED:
            self._note_failed()
        elif category_value == _LINKED and related is None:
            coerce_entity(related, "related")  # raises: a LINKED event needs its object
        if type(message) is not str:
            message = _message_text(message)
        self._emit(category_value, message, entity, related, level, details)

    def log_details(
        self,
        category: Category | str,
        message: str,
        details: dict[str, Any],
        /,
        *,
        entity: object = None,
        related: object = None,
        level: str = "info",
    ) -> None:
        """``log()`` with the details as a dict that the logger takes over (do not change it
        afterwards): for bridges such as the structlog processor, which build the dict
        anyway and would otherwise pay for unpacking it into keywords and packing it again.
        The same checks as ``log()``."""
        try:
            category_value = _CATEGORY_BY_NAME[category]
            level = _LEVEL_BY_NAME[level]
        except (KeyError, TypeError):
            category_value = Category.parse(category).value
            level = _checked_level(level)
        if category_value == _FAILED:
            self._note_failed()
        elif category_value == _LINKED and related is None:
            coerce_entity(related, "related")
        if type(message) is not str:
            message = _message_text(message)
        if type(details) is not dict:
            raise TypeError(f"details must be a dict, not {type(details).__name__}")
        self._emit(category_value, message, entity, related, level, details)

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
        self._emit(_CREATED, message, entity, None, _checked_level(level), details)

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
        self._emit(_LINKED, message, subject, obj, _checked_level(level), details)

    def _emit(  # noqa: PLR0917 - positional on purpose: the hot path
        self,
        category: str,
        message: str | None,
        entity: object,
        related: object,
        level: str,
        details: dict[str, Any],
    ) -> None:
        """The one record builder, behind every logging call: entities, time, the current
        job, onto the queue. ``category`` and ``level`` are checked already; a ``None``
        message is composed by the writer (see ``_records.default_message``)."""
        if self._structlog_vars:  # structlog contextvars are bound in this process
            details = _bound_context.merged(self._structlog_vars, details)
        entity_type = entity_id = related_type = related_id = None
        if entity is not None:
            entity_type, entity_id = coerce_entity(entity)
        if related is not None:
            related_type, related_id = coerce_entity(related, "related")
        logged_at = _time_ns() // 1000 - PG_EPOCH_US
        job = _current.get()
        if job is None:
            self._put((
                logged_at, category, level, message, None, None, None, None,
                entity_type, entity_id, related_type, related_id,
            ), details or None)  # fmt: skip
        else:
            context = job.details
            if context:  # the job's context, under the call's own keywords; nothing changes
                # it once the job is entered, so a call without keywords queues it as it is
                context = {**context, **details} if details else context
            self._put((
                logged_at, category, level, message,
                job.job_id, job.parent_job_id, job.root_job_id, job.name,
                entity_type, entity_id, related_type, related_id,
            ), context or details or None)  # fmt: skip

    def _note_failed(self) -> None:
        job = _current.get()
        if job is not None:
            self._failed_in[id(job)] = job

    def log_exception(self, exc: BaseException, message: str | None = None, **details: Any) -> None:
        """One ``FAILED`` event (level ``error``) for ``exc`` in the current job.

        ``details`` get ``exception_type``, ``exception_message`` and ``exception`` (the
        traceback text). The message defaults to ``"<type>: <message>"``, the entity to the
        current job's (``entity=`` names another). Leaving a job by
        an exception calls this for you (``log_failed_jobs=``), unless the job already
        logged a ``FAILED`` event.
        """
        name = _exception_name(exc)
        text = _message_text(exc)
        job = _current.get()
        if job is not None and job.entity is not None:
            details.setdefault("entity", job.entity)
        details.setdefault("exception_type", name)
        details.setdefault("exception_message", text)
        details.setdefault("exception", "".join(traceback.format_exception(exc)))
        if message is None:
            message = f"{name}: {text}" if text else name
        self.log(_FAILED, message, level="error", **details)

    def failed_logged(self) -> bool:
        """Whether this logger logged a ``FAILED`` event in the current job (so far).

        For integrations that record a task's failure: they log one only when the task
        did not report its own, so that a failure is one ``FAILED`` event.
        """
        job = _current.get()
        return job is not None and self._failed_in.get(id(job)) is job

    # --- life cycle --------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged before this call is committed, on disk in a spill
        file for replay, or dead-lettered.

        Returns ``False`` if that took longer than ``timeout`` seconds.
        """
        return self._writer.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, stop the writer and close its connection. Safe to call twice.

        Returns within ``timeout`` seconds (default ``exit_timeout``). With the database
        unreachable, queued events go to the spill directory until then; without one,
        retrying stops then. What was left is counted once as dropped. Returns ``True``
        when nothing was lost.
        """
        return self._writer.close(timeout)

    def check(self, timeout: float = 5.0) -> None:
        """Connect to the database (apart from the writer) and verify the schema, at once.

        Raises ``ConnectionFailed`` (a wrong host, a refused login, a missing database, a
        server that does not answer within ``timeout`` seconds) or ``SchemaNotMigrated``,
        with the fix in the message and never a password. For a worker that should not
        start misconfigured: logging itself never raises for the database, it keeps the
        events on disk and reports the trouble on the ``llamalogger`` logger.
        """
        probe(self._sink, timeout)

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush()`` for asyncio code: waits in a worker thread, never blocking the loop."""
        import asyncio  # here, not at import: most workers never touch asyncio

        return await asyncio.to_thread(self._writer.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> bool:
        """``close()`` for asyncio code: waits in a worker thread, never blocking the loop."""
        import asyncio

        return await asyncio.to_thread(self._writer.close, timeout)

    def stats(self) -> dict[str, int]:
        """Counters, read without waiting for the writer (docs/api.md lists them).

        They always add up: ``enqueued == written + rejected + dropped + on_disk + queued``.
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
