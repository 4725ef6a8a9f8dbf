"""Test your own logging code without a database.

::

    from llamalogger.testing import capture_events

    with capture_events() as capture:
        import_album(capture.logger, album_id=12)      # the code under test
    assert [(e.category, e.entity_id) for e in capture.events] == [("CREATED", "12")]

``capture.logger`` is a real ``LlamaLogger``: its calls validate, queue and encode events
exactly as they would for PostgreSQL, on the same background writer, and only the last step
differs: the rows are decoded into ``CapturedEvent`` values and kept in memory instead of
being copied into ``llama_log``. Job records (one per finished job, ``llama_job`` in the
database) are kept the same way, as ``CapturedJob`` values in ``capture.jobs``. Nothing
touches the network or the disk (spilling is off). As with a real logger, events are there
once ``flush()`` returned ``True``, and on leaving the ``with`` block, which closes the logger.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import psycopg.errors

from ._conninfo import DEFAULT_SCHEMA, validate_schema
from ._errors import ConfigurationError
from ._logger import LlamaLogger
from ._pipeline import Settings, Spill
from ._records import COLUMNS, JOB, JOB_COLUMNS, Category, JobStatus, logged_at_datetime

__all__ = ["CapturedEvent", "CapturedJob", "EventCapture", "capture_events"]

# The writer options that mean something in memory; spilling and dead letters would write
# files, and an in-memory sink never refuses a row.
_OPTIONS = frozenset(
    {
        "queue_size",
        "batch_size",
        "flush_interval",
        "on_full",
        "block_timeout",
        "exit_timeout",
        "flush_on_outer_job_exit",
    }
)


@attrs.frozen
class CapturedEvent:
    """One event as ``llama_log`` would store it: its columns, with ``details`` decoded.

    ``category`` is a ``Category`` (a ``str``, so ``event.category == "CREATED"`` holds) and
    ``logged_at`` an aware ``datetime`` in UTC; ``attrs.asdict(event)`` gives the row as a dict.
    """

    logged_at: dt.datetime
    category: Category
    level: str
    message: str
    job_id: str | None
    parent_job_id: str | None
    root_job_id: str | None
    job_name: str | None
    entity_type: str | None
    entity_id: str | None
    related_type: str | None
    related_id: str | None
    details: dict[str, Any] | None


@attrs.frozen
class CapturedJob:
    """One finished job as ``llama_job`` would store it: its columns, with ``details`` decoded.

    ``status`` is a ``JobStatus`` (a ``str``, so ``job.status == "failed"`` holds);
    ``started_at`` and ``ended_at`` are aware ``datetime`` values in UTC. A retried task has
    one per attempt, all but the last with status ``retried``.
    """

    job_id: str
    parent_job_id: str | None
    root_job_id: str
    job_name: str | None
    entity_type: str | None
    entity_id: str | None
    status: JobStatus
    attempt: int
    started_at: dt.datetime
    ended_at: dt.datetime
    error_type: str | None
    error_message: str | None
    pid: int | None
    host: str | None
    details: dict[str, Any] | None


def _decoded_job(row: Sequence[object]) -> CapturedJob:
    """A ``CapturedJob`` from a job record's row (``JOB_COPY_TYPES``, marker at index 1)."""
    values = dict(zip(JOB_COLUMNS, (row[0], *row[2:]), strict=True))
    for key in ("started_at", "ended_at"):
        moment = values[key]
        assert isinstance(moment, int)
        values[key] = logged_at_datetime(moment)
    details = values["details"]
    assert details is None or isinstance(details, bytes)
    values["details"] = None if details is None else json.loads(details[1:])
    values["status"] = JobStatus(str(values["status"]))
    return CapturedJob(**values)  # type: ignore[arg-type]


def _decoded(row: Sequence[object]) -> CapturedEvent:
    """A ``CapturedEvent`` from one row as the writer hands it to COPY (``COPY_TYPES``):
    microseconds since 2000 for ``logged_at``, jsonb's version byte before the details."""
    values = dict(zip(COLUMNS, row, strict=True))
    logged_at = values["logged_at"]
    details = values["details"]
    assert isinstance(logged_at, int)
    assert details is None or isinstance(details, bytes)
    values["logged_at"] = logged_at_datetime(logged_at)
    values["category"] = Category(str(values["category"]))
    values["details"] = None if details is None else json.loads(details[1:])
    return CapturedEvent(**values)  # type: ignore[arg-type]


# A \u0000 escape in JSON text, not an escaped backslash followed by "u0000".
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _check_storable(row: Sequence[object]) -> None:
    """Refuse what PostgreSQL refuses, as it does, so that the writer cleans the row the
    way it would for the database: text with NUL or lone surrogates, NUL in JSON."""
    for value in row:
        if isinstance(value, str):
            value.encode()  # UnicodeEncodeError on a lone surrogate, as psycopg's dumper
            if "\x00" in value:
                raise psycopg.errors.CharacterNotInRepertoire(
                    'invalid byte sequence for encoding "UTF8": 0x00'
                )
        elif isinstance(value, bytes) and _JSON_NUL.search(value):
            raise psycopg.errors.UntranslatableCharacter(
                "unsupported Unicode escape sequence: \\u0000 cannot be converted to text"
            )


_STATUSES = frozenset(JobStatus)
# llama_job's NOT NULL columns without a default, by their place in a job record's row.
_JOB_REQUIRED = {0: "ended_at", 2: "status", 4: "job_id", 6: "root_job_id", 11: "started_at",
                 12: "attempt"}  # fmt: skip


def _check_job(row: Sequence[object]) -> None:
    """Refuse a job row as llama_job's constraints would: NOT NULL, status, attempt."""
    for index, column in _JOB_REQUIRED.items():
        if row[index] is None:
            raise psycopg.errors.NotNullViolation(
                f'null value in column "{column}" of relation "llama_job" violates not-null '
                "constraint"
            )
    if row[2] not in _STATUSES:
        raise psycopg.errors.CheckViolation(
            'new row for relation "llama_job" violates check constraint "llama_job_status_check"'
        )
    attempt = row[12]
    if not isinstance(attempt, int) or attempt < 1:
        raise psycopg.errors.CheckViolation(
            'new row for relation "llama_job" violates check constraint "llama_job_attempt_check"'
        )


class _MemorySink:
    """The writer's ``Sink`` for ``capture_events``: keeps every row it is given, decoded."""

    def __init__(self, schema: str) -> None:
        self._schema = schema
        self._lock = threading.Lock()  # the writer appends while the test reads
        self._events: list[CapturedEvent] = []
        self._jobs: list[CapturedJob] = []
        self._replayed: set[str] = set()

    def write(self, rows: Iterable[Sequence[object]]) -> None:
        # Checked and decoded before taking the lock: a batch is all or nothing, like the one
        # transaction of its COPYs.
        events = []
        jobs = []
        for row in rows:
            _check_storable(row)
            if row[1] == JOB:
                _check_job(row)
                jobs.append(_decoded_job(row))
            else:
                events.append(_decoded(row))
        with self._lock:
            self._events.extend(events)
            self._jobs.extend(jobs)

    def write_replays(self, files: Sequence[tuple[str, Sequence[Sequence[object]]]]) -> set[str]:
        # Never called while spilling is off; kept exact for the protocol's sake.
        with self._lock:
            stored_before = {spill_id for spill_id, _ in files if spill_id in self._replayed}
        fresh = [row for spill_id, rows in files if spill_id not in stored_before for row in rows]
        self.write(fresh)
        with self._lock:
            self._replayed.update(spill_id for spill_id, _ in files)
        return stored_before

    def cancel(self, timeout: float = 0.0) -> None:
        """Nothing to cancel: a write in memory never hangs."""

    def progress(self) -> int:
        """Nothing to watch: a write in memory never waits for anyone."""
        return 0

    def target(self) -> dict[str, str]:
        return {"host": "memory", "port": "", "dbname": "", "schema": self._schema}

    def after_fork_in_child(self) -> None:
        """A forked child keeps a copy of what was captured so far; its own events stay in it."""

    def close(self) -> None:
        """Nothing to release: the events stay readable after ``close()``."""

    def events(self) -> list[CapturedEvent]:
        with self._lock:
            return list(self._events)

    def jobs(self) -> list[CapturedJob]:
        with self._lock:
            return list(self._jobs)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
            self._jobs.clear()


@attrs.frozen
class EventCapture:
    """What ``capture_events()`` yields: the logger to hand to the code under test, and
    the events and job records it has delivered so far."""

    logger: LlamaLogger
    _sink: _MemorySink = attrs.field(alias="sink", repr=False)

    @property
    def events(self) -> list[CapturedEvent]:
        """The events delivered so far, in the order they were logged (a new list each
        time). Call ``logger.flush()`` first, or read it after the ``with`` block."""
        return self._sink.events()

    @property
    def jobs(self) -> list[CapturedJob]:
        """The job records delivered so far (one per finished job, or per attempt of a
        retried task), in the order the jobs ended (a new list each time)."""
        return self._sink.jobs()

    def clear(self) -> None:
        """Forget the events and job records delivered so far, e.g. those of a test's set-up."""
        self._sink.clear()


@contextmanager
def capture_events(
    *, schema: str = DEFAULT_SCHEMA, log_failed_jobs: bool = True, **options: Any
) -> Iterator[EventCapture]:
    """A ``LlamaLogger`` that keeps its events in memory, for as long as the block lasts.

    ``schema`` only names the schema in ``logger.schema``; ``log_failed_jobs`` and the
    writer ``options`` (``queue_size``, ``batch_size``, ``flush_interval``, ``on_full``,
    ``block_timeout``, ``exit_timeout``, ``flush_on_outer_job_exit``) mean what they mean
    for ``LlamaLogger``. Leaving the block closes the logger, which delivers what is queued.
    """
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ConfigurationError(
            f"capture_events() takes no {', '.join(sorted(unknown))}: it keeps events in "
            f"memory; its writer options are {', '.join(sorted(_OPTIONS))}"
        )
    schema = validate_schema(schema)
    sink = _MemorySink(schema)
    settings = Settings(**options, spill_dir=Spill.OFF, log_failed_jobs=log_failed_jobs)
    logger = LlamaLogger._with_sink(sink, settings)
    try:
        yield EventCapture(logger, sink=sink)
    finally:
        logger.close()
