"""Test your own logging code without a database.

::

    from llamalogger.testing import capture_events

    with capture_events() as capture:
        import_album(capture.logger, album_id=12)      # the code under test
    assert [(e.category, e.entity_id) for e in capture.events] == [("CREATED", "12")]

``capture.logger`` is a real ``LlamaLogger``: its calls validate, queue and encode events
exactly as they would for PostgreSQL, on the same background writer, and only the last step
differs: the rows are decoded into ``CapturedEvent`` values and kept in memory instead of
being copied into ``llama_log``. Nothing touches the network or the disk (spilling is off).
As with a real logger, events are there once ``flush()`` returned ``True``, and on leaving
the ``with`` block, which closes the logger.
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
from ._records import COLUMNS, Category, logged_at_datetime

__all__ = ["CapturedEvent", "EventCapture", "capture_events"]

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


class _MemorySink:
    """The writer's ``Sink`` for ``capture_events``: keeps every row it is given, decoded."""

    def __init__(self, schema: str) -> None:
        self._schema = schema
        self._lock = threading.Lock()  # the writer appends while the test reads
        self._events: list[CapturedEvent] = []
        self._replayed: set[str] = set()

    def write(self, rows: Iterable[Sequence[object]]) -> None:
        # Checked and decoded before taking the lock: a batch is all or nothing, like one COPY.
        events = []
        for row in rows:
            _check_storable(row)
            events.append(_decoded(row))
        with self._lock:
            self._events.extend(events)

    def write_replay(self, spill_id: str, rows: Sequence[Sequence[object]]) -> bool:
        # Never called while spilling is off; kept exact for the protocol's sake.
        with self._lock:
            if spill_id in self._replayed:
                return False
            self._replayed.add(spill_id)
        self.write(rows)
        return True

    def cancel(self, timeout: float = 0.0) -> None:
        """Nothing to cancel: a write in memory never hangs."""

    def target(self) -> dict[str, str]:
        return {"host": "memory", "port": "", "dbname": "", "schema": self._schema}

    def after_fork_in_child(self) -> None:
        """A forked child keeps a copy of what was captured so far; its own events stay in it."""

    def close(self) -> None:
        """Nothing to release: the events stay readable after ``close()``."""

    def events(self) -> list[CapturedEvent]:
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()


@attrs.frozen
class EventCapture:
    """What ``capture_events()`` yields: the logger to hand to the code under test, and
    the events it has delivered so far."""

    logger: LlamaLogger
    _sink: _MemorySink = attrs.field(alias="sink", repr=False)

    @property
    def events(self) -> list[CapturedEvent]:
        """The events delivered so far, in the order they were logged (a new list each
        time). Call ``logger.flush()`` first, or read it after the ``with`` block."""
        return self._sink.events()

    def clear(self) -> None:
        """Forget the events delivered so far, e.g. those of a test's set-up."""
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
