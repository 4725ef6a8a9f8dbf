"""What one event is: its category, its record, its entities and its columns.

The record is built on the caller's thread, so it is a plain tuple holding raw values
(an integer timestamp, the details dict as given). Everything costly — JSON, checks,
sanitising — happens in the writer thread (``_sanitise``).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "COLUMNS",
    "COPY_TYPES",
    "JOB",
    "JOB_COLUMNS",
    "JOB_COPY_TYPES",
    "LEVELS",
    "MAX_ENTITY_ID_LENGTH",
    "MAX_ENTITY_TYPE_LENGTH",
    "NOT_DETAILS",
    "PG_EPOCH_US",
    "Category",
    "Entity",
    "JobRecord",
    "JobStatus",
    "Record",
    "coerce_entity",
    "default_message",
    "logged_at_datetime",
]


class Category(enum.StrEnum):
    """What happened to the catalogue; stored as the ``llama_log_category`` enum."""

    CREATED = "CREATED"
    UPDATED = "UPDATED"
    ENRICHED = "ENRICHED"
    MATCHED = "MATCHED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    LINKED = "LINKED"
    #: A plain log line with no catalogue meaning, as the logging and structlog bridges store.
    NOTED = "NOTED"

    @classmethod
    def parse(cls, value: object) -> Category:
        """The category named by ``value`` (a ``Category`` or its name in any case).

        Raises ``ValueError`` listing the known categories otherwise.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.upper())
            except ValueError:
                pass
        known = ", ".join(cls)
        raise ValueError(f"unknown category {value!r:.60}; use a Category ({known})")


LEVELS = frozenset({"debug", "info", "warning", "error"})

# Keys of a structlog event dict (and of structlog's bound contextvars) that are not details:
# defined here, where no structlog import is needed, so that the facade's merging of bound
# values (_bound_context) and the structlog processor leave out the same keys.
NOT_DETAILS: frozenset[str] = frozenset(
    {
        # stored in their own columns, or taken from the job context by LlamaLogger
        "category",
        "entity",
        "related",
        "event",
        "level",
        "job_id",
        "parent_job_id",
        "root_job_id",
        "job_name",
        # the row's logged_at is the caller's clock already
        "timestamp",
        # turned into "exception" (traceback text) instead of being stored raw
        "exc_info",
        # structlog.stdlib.ProcessorFormatter bookkeeping: a LogRecord and a flag
        "_record",
        "_from_structlog",
    }
)
"""Event dict keys that ``PersistToLlamaLog`` does not copy into ``details``."""

MAX_ENTITY_TYPE_LENGTH = 100
MAX_ENTITY_ID_LENGTH = 255


@attrs.frozen
class Entity:
    """A catalogue entity such as ``Entity("artist", "7")``; a ``(type, id)`` pair works too."""

    type: str
    id: str

    def __iter__(self) -> Any:
        return iter((self.type, self.id))


def coerce_entity(value: object, what: str = "entity") -> tuple[str, str]:
    """``(type, id)`` from a pair or an ``Entity``; ``ValueError`` names what is wrong.

    Ids may be ``str`` or ``int`` (stored as text); types must be non-empty strings.
    """
    # The hot path: a (str, str) or (str, int) tuple, checked without isinstance chains.
    if type(value) is tuple and len(value) == 2:
        kind, ident = value
        if type(kind) is str and 0 < len(kind) <= MAX_ENTITY_TYPE_LENGTH:
            if type(ident) is str and 0 < len(ident) <= MAX_ENTITY_ID_LENGTH:
                return value
            if type(ident) is int and len(text := str(ident)) <= MAX_ENTITY_ID_LENGTH:
                return kind, text
    if isinstance(value, Entity):
        kind, ident = value.type, value.id
    elif isinstance(value, tuple) and len(value) == 2:
        kind, ident = value
    else:
        raise ValueError(f"{what} must be a (type, id) pair or an Entity, not {value!r:.80}")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{what} type must be a non-empty str, not {kind!r:.80}")
    if len(kind) > MAX_ENTITY_TYPE_LENGTH:
        raise ValueError(f"{what} type is longer than {MAX_ENTITY_TYPE_LENGTH} characters")
    if isinstance(ident, int) and not isinstance(ident, bool):
        ident = str(ident)
    elif not isinstance(ident, str) or not ident:
        raise ValueError(f"{what} id must be a non-empty str or an int, not {ident!r:.80}")
    if len(ident) > MAX_ENTITY_ID_LENGTH:
        raise ValueError(f"{what} id is longer than {MAX_ENTITY_ID_LENGTH} characters")
    # Plain strs in the record: a str subclass's own methods must not run in the writer.
    return str.__str__(kind), str.__str__(ident)


# One event as the caller logged it, in COLUMNS order. A plain tuple because building it
# is the hot path: a NamedTuple costs three times as much to create. ``logged_at`` is
# microseconds since 2000-01-01 UTC, which is what a binary COPY of timestamptz carries,
# so the writer can pass most records to COPY untouched.
Record = tuple[
    int,  # logged_at
    str,  # category
    str,  # level
    str | None,  # message; None: a default composed by the writer
    str | None,  # job_id
    str | None,  # parent_job_id
    str | None,  # root_job_id
    str | None,  # job_name
    str | None,  # entity_type
    str | None,  # entity_id
    str | None,  # related_type
    str | None,  # related_id
    Mapping[str, Any] | None,  # details, serialised by the writer
]

COLUMNS: tuple[str, ...] = (
    "logged_at",
    "category",
    "level",
    "message",
    "job_id",
    "parent_job_id",
    "root_job_id",
    "job_name",
    "entity_type",
    "entity_id",
    "related_type",
    "related_id",
    "details",
)

# How each column travels in a binary COPY. The server reads every field with the
# column's own receive function, so: timestamptz is an int8 of microseconds since 2000,
# the enum and varchar columns take the bytes of text, and jsonb takes a version byte
# (1) followed by the JSON text, sent as bytea.
COPY_TYPES: tuple[str, ...] = ("int8",) + ("text",) * 11 + ("bytea",)

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds


class JobStatus(enum.StrEnum):
    """How a job ended; stored in ``llama_job.status`` (migration 0006)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Left by cancellation, Ctrl-C, ``SystemExit`` or ``GeneratorExit``: stopped, not broken.
    CANCELLED = "cancelled"
    #: One attempt of a task that its queue will run again (same job id, next ``attempt``).
    RETRIED = "retried"


# The record of one finished job, queued, spilled and written like an event: the marker
# ``JOB`` where an event has its category tells the two apart all the way to the sink,
# which writes it into ``llama_job`` in the same transaction as the events of its batch.
# Times are microseconds since 2000-01-01 UTC, as for events; details (the job's context
# and what a task queue knows of it) come last, as for events.
JOB = "JOB"

JobRecord = tuple[
    int,  # ended_at
    str,  # JOB
    str,  # status: a JobStatus value
    str | None,  # error_message
    str,  # job_id
    str | None,  # parent_job_id
    str,  # root_job_id
    str | None,  # job_name
    str | None,  # entity_type
    str | None,  # entity_id
    str | None,  # error_type
    int,  # started_at
    int,  # attempt
    int,  # pid
    str,  # host
    Mapping[str, Any] | None,  # details, serialised by the writer
]

# The columns of llama_job a job record fills, in the record's order without the marker.
JOB_COLUMNS: tuple[str, ...] = (
    "ended_at",
    "status",
    "error_message",
    "job_id",
    "parent_job_id",
    "root_job_id",
    "job_name",
    "entity_type",
    "entity_id",
    "error_type",
    "started_at",
    "attempt",
    "pid",
    "host",
    "details",
)

JOB_COPY_TYPES: tuple[str, ...] = (
    ("int8",) + ("text",) * 9 + ("int8", "int4", "int4", "text", "bytea")
)


def logged_at_datetime(logged_at: int) -> dt.datetime:
    """The ``datetime`` of a record's ``logged_at``."""
    return _PG_EPOCH + dt.timedelta(microseconds=logged_at)


_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def default_message(record: Record) -> str:
    """The message of a ``created()`` or ``linked()`` call that gave none."""
    subject = f"{record[8]} {record[9]}"
    if record[1] == "LINKED":
        return f"{subject} linked to {record[10]} {record[11]}"
    return f"{subject} {record[1].lower()}"
