"""Making any caller's event storable, and noting whether that changed it.

Runs in the writer thread only. Whatever a caller passed — text PostgreSQL refuses, values
JSON has no form for, cycles, objects whose ``repr`` or iteration raises anything (even
``SystemExit`` or ``KeyboardInterrupt``) — ``fast_row``, ``clean_row`` and ``describe``
return: the bad part is replaced by a stand-in (docs/reliability.md, "Sanitising rules"),
the record is reported as changed, and no other record is affected.

Job records (``record[1] == JOB``, see ``_records``) take the same way: their texts are
cleaned as an event's are, their details become jsonb, and their row keeps the marker at
index 1 and the details last, so that the sink can tell the two apart. A job record has no
default message: ``error_message`` stays NULL unless the job failed.

Details are encoded with orjson when they are plain (exact ``str``, ``int``, ``bool``,
``None``, finite ``float``, dates and times, ``Decimal``, ``UUID``, and ``dict``/``list``/
``tuple`` of those, less than 32 levels deep), which is nearly every event. Anything else, and
anything orjson refuses or would store differently from the rules (ints beyond 64 bits,
lone surrogates, NUL, over-long JSON), goes the careful way: ``_Cleaner`` builds a JSON-safe
copy that ``json.dumps`` encodes.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, cast

import orjson

from .._records import (
    COLUMNS,
    JOB,
    JOB_COLUMNS,
    JobStatus,
    Record,
    default_message,
    logged_at_datetime,
)

__all__ = [
    "MAX_DETAILS_DEPTH",
    "MAX_TEXT_LENGTH",
    "clean",
    "clean_row",
    "describe",
    "described",
    "encode",
    "fast_row",
]

# Longer strings are cut (and the record counted as sanitised): one runaway message
# must not turn into a 10 MB row that slows every batch behind it.
MAX_TEXT_LENGTH = 100_000
# A container this many levels below the details object is stored as "[too deep]".
MAX_DETAILS_DEPTH = 32

_SURROGATES = re.compile("[\ud800-\udfff]")


# --- text ----------------------------------------------------------------------------


def _exact_str(text: str) -> str:
    # A str subclass may override len(), "in", encode() and hash() with code that raises;
    # str.__str__ copies its characters into a plain str without calling any of it.
    return text if type(text) is str else str.__str__(text)


def _clean_text(text: str) -> str:
    """Text PostgreSQL accepts: no NUL, no lone surrogates, at most MAX_TEXT_LENGTH.

    Returns ``text`` itself when it was a plain ``str`` that needed nothing.
    """
    text = _exact_str(text)
    if len(text) > MAX_TEXT_LENGTH:
        text = text[:MAX_TEXT_LENGTH] + f"... [truncated {len(text) - MAX_TEXT_LENGTH} chars]"
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii() and _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text


def _type_name(value: object) -> str:
    try:
        name = type(value).__name__
    except BaseException:  # a metaclass may define __name__ as it likes
        return "object"
    return _clean_text(name) if isinstance(name, str) else "object"


def _unprintable(value: object, error: BaseException) -> str:
    """The stand-in for a value that could not be read or printed at all."""
    return f"<unprintable {_type_name(value)}: {_type_name(error)}>"


def _safe_repr(value: object) -> str:
    """``repr(value)`` as a plain str; a stand-in if that raises anything."""
    try:
        return _exact_str(repr(value))
    # Only the writer thread runs this, and signals are delivered to the main thread:
    # a BaseException here was raised by the caller's __repr__, not by a real Ctrl-C.
    except BaseException as error:
        return _unprintable(value, error)


# --- details -------------------------------------------------------------------------


def _json_default(value: object) -> object:
    """Stand-ins for values JSON has no form for: documented in docs/reliability.md.

    May raise whatever the value's ``repr`` raises; ``_Cleaner.value`` turns that into
    the ``<unprintable ...>`` stand-in.
    """
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=_safe_repr)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, enum.Enum):
        return value.value
    return _exact_str(repr(value))


class _Cleaner:
    """Builds a JSON-safe copy of details, noting whether anything had to be replaced
    (bad text, NaN, a cycle, too deep, something unreadable); documented stand-ins such
    as ISO dates do not count."""

    def __init__(self) -> None:
        self.changed = False
        self._enclosing: set[int] = set()

    def text(self, text: str) -> str:
        exact = _exact_str(text)  # a str subclass with the same characters is no change
        cleaned = _clean_text(exact)
        self.changed = self.changed or cleaned is not exact
        return cleaned

    def value(self, value: object, depth: int) -> object:
        """``value`` as stored; ``depth`` counts the containers around it (details: 0).

        Never raises: whatever the caller's object raises (isinstance() may call its
        ``__class__``, reading it its ``items()`` or ``__iter__``) makes it a stand-in.
        """
        try:
            return self._value(value, depth)
        except BaseException as error:  # writer thread: see _safe_repr
            self.changed = True
            return _unprintable(value, error)

    def _value(self, value: object, depth: int) -> object:
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            number = int.__index__(value)  # a plain int: a subclass may override __str__
            try:
                int.__str__(number)
            except ValueError:  # more digits than Python will print
                self.changed = True
                return f"<int of {number.bit_length()} bits>"
            return number
        if isinstance(value, float):
            real = float.__float__(value)
            if math.isfinite(real):
                return real
            self.changed = True
            return repr(real)
        if isinstance(value, Mapping | list | tuple | set | frozenset):
            return self._container(value, depth)
        return self.value(_json_default(value), depth)

    def _container(self, value: object, depth: int) -> object:
        if depth >= MAX_DETAILS_DEPTH or id(value) in self._enclosing:
            self.changed = True
            return "[too deep]" if depth >= MAX_DETAILS_DEPTH else "[cycle]"
        self._enclosing.add(id(value))
        try:
            if isinstance(value, Mapping):
                return {self._key(k): self.value(v, depth + 1) for k, v in value.items()}
            items = _json_default(value) if isinstance(value, set | frozenset) else value
            return [self.value(v, depth + 1) for v in items]  # type: ignore[attr-defined]
        finally:
            self._enclosing.discard(id(value))

    def _key(self, key: object) -> str:
        # Keys become plain strs, so building the copy never calls the caller's __hash__.
        try:
            return self.text(key) if isinstance(key, str) else self.text(_exact_str(repr(key)))
        except BaseException as error:  # writer thread: see _safe_repr
            self.changed = True
            return _unprintable(key, error)


# Scalars orjson stores as the careful path would: natively, or (dates, times, Decimal)
# through _orjson_default. Datetimes are passed through to it so that they are stored as
# isoformat() gives them.
_PLAIN_SCALARS = frozenset(
    {str, int, bool, type(None), uuid.UUID, dt.datetime, dt.date, dt.time, decimal.Decimal}
)
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME
_BACKSLASH = ord("\\")


def _plain(value: object, depth: int) -> bool:
    """Whether orjson stores the container ``value`` exactly as the careful path would.

    Exact types only (``type() is``), so no caller code runs: a subclass, an enum, a set
    or any other object goes the careful way. ``depth`` as in ``_Cleaner.value``; the
    depth limit also ends the walk through a cycle.
    """
    if depth >= MAX_DETAILS_DEPTH:
        return False
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                return False
        return _plain_items(value.values(), depth + 1)
    if type(value) is list or type(value) is tuple:
        return _plain_items(value, depth + 1)
    return False


def _plain_items(items: Iterable[object], depth: int) -> bool:
    # Loops, not all(): this runs for every event with details.
    for item in items:
        kind = type(item)
        if kind in _PLAIN_SCALARS:
            continue
        if kind is float:
            if item - item != 0.0:  # type: ignore[operator]  # NaN, infinities: orjson: null
                return False
        elif not _plain(item, depth):
            return False
    return True


def _orjson_default(value: object) -> object:
    # Only reached for the dates, times and Decimals that _plain lets through; anything it
    # raises makes orjson raise TypeError, and the details go the careful way.
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _fast_jsonb(details: Mapping[str, Any]) -> bytes | None:
    """The jsonb field for plain details (see ``_plain``), or ``None``: go the careful way."""
    # _plain(details, 0), unrolled for the details object itself: this runs for every
    # event with details, and two calls are a third of its cost.
    if type(details) is not dict:
        return None
    for key, item in details.items():
        if type(key) is not str:
            return None
        kind = type(item)
        if kind in _PLAIN_SCALARS:
            continue
        if kind is float:
            if item - item != 0.0:  # NaN, infinities: orjson would store null
                return None
        elif not _plain(item, 1):
            return None
    try:
        text = orjson.dumps(details, default=_orjson_default, option=_ORJSON_OPTIONS)
    except TypeError:  # ints beyond 64 bits, lone surrogates, a datetime whose tzinfo raises
        return None
    # jsonb refuses \u0000 (orjson escapes NUL as that); the length rule counts characters,
    # and a UTF-8 text of at most MAX_TEXT_LENGTH bytes has at most that many characters.
    # (A backslash first: a one-byte search costs a fraction of the six-byte one.)
    if len(text) > MAX_TEXT_LENGTH or (_BACKSLASH in text and b"\\u0000" in text):
        return None
    return b"\x01" + text


def _careful_json(details: object) -> tuple[str, bool]:
    cleaner = _Cleaner()
    cleaned = cleaner.value(details, 0)
    try:
        text = json.dumps(cleaned, ensure_ascii=False, allow_nan=False)
    except BaseException as error:  # cleaned values are JSON; kept as a last guard
        return json.dumps(_unprintable(details, error)), True
    if len(text) > MAX_TEXT_LENGTH:
        cleaner.changed = True
        text = json.dumps({"truncated": _clean_text(text)}, ensure_ascii=False)
    return text, cleaner.changed


def _careful_jsonb(details: object) -> tuple[bytes, bool]:
    text, changed = _careful_json(details)
    return b"\x01" + text.encode(), changed


def _jsonb(details: Mapping[str, Any]) -> tuple[bytes, bool]:
    """The details as a binary jsonb field, and whether they had to be sanitised."""
    payload = _fast_jsonb(details)
    if payload is not None:
        return payload, False
    return _careful_jsonb(details)


# --- rows ----------------------------------------------------------------------------


def _with_message(record: Record) -> Record:
    if record[3] is not None:
        return record
    try:
        message = default_message(record)
    except BaseException:  # writer thread: see _safe_repr; entity texts format themselves
        plain = (_exact_str(record[1]), *map(_clean_optional, record[8:12]))
        message = default_message(
            cast(Record, (0, plain[0], "", None, *[None] * 4, *plain[1:], None))
        )
    return (*record[:3], message, *record[4:])


def fast_row(record: Record) -> tuple[tuple[object, ...], bool]:
    """The COPY row for ``record``, checking only what the server would accept anyway.

    Most records go to COPY as they are. NUL characters and lone surrogates in the text
    columns are not looked for here: the server (or the encoder) refuses them, and the
    writer then retries the batch with ``clean_row``. Returns the row and whether it was
    sanitised. Never raises.
    """
    if record[1] == JOB:
        return _fast_job_row(record)
    message = record[3]
    if message is None:
        record = _with_message(record)
    elif type(message) is not str or len(message) > MAX_TEXT_LENGTH:
        return clean_row(record)
    details = record[12]
    if details is None:
        return record, False
    payload = _fast_jsonb(details)
    if payload is not None:
        return (*record[:12], payload), False
    payload, changed = _careful_jsonb(details)
    return (*record[:12], payload), changed


def _clean_optional(text: str | None) -> str | None:
    return None if text is None else _clean_text(text)


def clean_row(record: Record) -> tuple[tuple[object, ...], bool]:
    """The COPY row for ``record`` with every text made storable; and whether anything
    had to change. Never raises."""
    if record[1] == JOB:
        return _clean_job_row(record)
    record = _with_message(record)
    # Category, level and job ids were checked by the caller; copied only so that a str
    # subclass cannot run its own code in the COPY.
    fixed = tuple(map(_exact_str, record[1:3])) + tuple(
        None if text is None else _exact_str(text) for text in record[4:7]
    )
    # message, job_name, entity and related columns; a str subclass alone is no change
    texts = tuple(None if text is None else _exact_str(text) for text in record[3:4] + record[7:12])
    message, job_name, entity_type, entity_id, related_type, related_id = cleaned = tuple(
        map(_clean_optional, texts)
    )
    changed = any(a is not b for a, b in zip(cleaned, texts, strict=True))
    payload: bytes | None = None
    if record[12] is not None:
        payload, details_changed = _jsonb(record[12])
        changed = changed or details_changed
    row = (
        record[0],
        *fixed[:2],
        message,
        *fixed[2:],
        job_name,
        entity_type,
        entity_id,
        related_type,
        related_id,
        payload,
    )
    return row, changed


def describe(record: Record) -> dict[str, object]:
    """A JSON-ready form of ``record`` for dead letters and diagnostics. Never raises."""
    if record[1] == JOB:
        return _describe_job(record)
    record = _with_message(record)
    described: dict[str, object] = dict(zip(COLUMNS, record, strict=True))
    described["logged_at"] = logged_at_datetime(record[0]).isoformat()
    for key in COLUMNS[1:12]:
        if described[key] is not None:
            described[key] = _clean_text(described[key])  # type: ignore[arg-type]
    details = record[12]
    described["details"] = None if details is None else _Cleaner().value(details, 0)
    return described


# --- job records ---------------------------------------------------------------------

# Where a job record (and its row) keeps what: see _records.JobRecord.
_JOB_DETAILS = 15
_JOB_HOST = 14
_JOB_TEXTS = (3, 7, 8, 9, 10, 14)  # error_message, job_name, entity, error_type, host
_JOB_FIXED = (2, 4, 5, 6)  # status and the job ids: checked by the caller
_JOB_INTS = (11, 12, 13)  # started_at, attempt, pid
_JOB_TIMES = ("ended_at", "started_at")
# What goes to COPY untouched: no caller code can run in it (an enum member's is ours).
_TEXT_TYPES = frozenset({str, type(None)})
_STATUS_TYPES = frozenset({str, JobStatus})


def _job_details(record: Record) -> Mapping[str, Any] | None:
    return cast("Mapping[str, Any] | None", record[_JOB_DETAILS])


def _fast_job_row(record: Record) -> tuple[tuple[object, ...], bool]:
    """``fast_row`` for a job record: as it is, with its details as jsonb, unless a text is
    not a plain ``str`` or the error message is too long (then ``clean_row``). NUL and lone
    surrogates are left to the server, as for events."""
    message = record[3]
    if (
        (message is not None and (type(message) is not str or len(message) > MAX_TEXT_LENGTH))
        or type(record[2]) not in _STATUS_TYPES
        or not _TEXT_TYPES.issuperset(map(type, record[4:11]))
        or type(record[_JOB_HOST]) not in _TEXT_TYPES
    ):
        return _clean_job_row(record)
    details = _job_details(record)
    if details is None:
        return record, False
    payload = _fast_jsonb(details)
    if payload is not None:
        return (*record[:_JOB_DETAILS], payload), False
    payload, changed = _careful_jsonb(details)
    return (*record[:_JOB_DETAILS], payload), changed


def _exact_int(value: object) -> int | None:
    """A plain int for an integer column; NULL for anything else, which the server then
    refuses for its NOT NULL columns (the record is dead-lettered, not guessed at)."""
    if isinstance(value, int):
        try:
            return int.__index__(value)
        except BaseException:  # writer thread: see _safe_repr
            return None
    return None


def _clean_job_row(record: Record) -> tuple[tuple[object, ...], bool]:
    """``clean_row`` for a job record."""
    row: list[object] = list(record)
    changed = False
    for index in _JOB_FIXED:
        text = row[index]
        row[index] = None if text is None else _exact_str(text)  # type: ignore[arg-type]
    for index in _JOB_TEXTS:
        text = row[index]
        if text is None:
            continue
        exact = _exact_str(text)  # type: ignore[arg-type]
        cleaned = _clean_text(exact)
        changed = changed or cleaned is not exact
        row[index] = cleaned
    row[0] = _exact_int(row[0])
    for index in _JOB_INTS:
        row[index] = _exact_int(row[index])
    row[1] = JOB
    details = _job_details(record)
    if details is not None:
        payload, details_changed = _jsonb(details)
        row[_JOB_DETAILS] = payload
        changed = changed or details_changed
    return tuple(row), changed


def _describe_job(record: Record) -> dict[str, object]:
    """``describe`` for a job record: by llama_job's column names."""
    values = (record[0], *record[2:_JOB_DETAILS])
    described: dict[str, object] = dict(zip(JOB_COLUMNS[:-1], values, strict=True))
    for key, value in described.items():
        if isinstance(value, str):
            described[key] = _clean_text(value)
        elif value is not None and not isinstance(value, int):
            described[key] = _safe_repr(value)
    for key in _JOB_TIMES:
        moment = _exact_int(described[key])
        try:
            described[key] = None if moment is None else logged_at_datetime(moment).isoformat()
        except (OverflowError, ValueError):
            described[key] = moment
    details = _job_details(record)
    described["details"] = None if details is None else _Cleaner().value(details, 0)
    return described


# --- the writer's entry points ----------------------------------------------------------

# What a record becomes on its way to COPY, a spill file or a dead letter. The functions
# above never raise for any input; these wrappers keep even a bug there from costing more
# than this one record.


def encode(record: Record) -> tuple[tuple[object, ...], bool]:
    """``fast_row``, or ``clean`` should it fail."""
    try:
        return fast_row(record)
    except BaseException:
        return clean(record)


_STAND_IN = b'\x01{"llamalogger_error": "these details could not be encoded"}'


def clean(record: Record) -> tuple[tuple[object, ...], bool]:
    """``clean_row``, or the record with a stand-in for its details should it fail."""
    try:
        return clean_row(record)
    except BaseException:
        last = len(record) - 1  # the details: last in either kind of record
        row, _ = clean_row((*record[:last], None))  # type: ignore[arg-type]
        return (*row[:last], _STAND_IN), True


def described(record: Record) -> dict[str, object]:
    """``describe``, or the record without its details should it fail."""
    try:
        return describe(record)
    except BaseException:
        return describe((*record[: len(record) - 1], None))  # type: ignore[arg-type]
