"""What one event is: its category, its record, its entities, and how it is made safe to store.

The record is built on the caller's thread, so it is a plain tuple holding raw values
(an integer timestamp, the details dict as given). Everything costly — JSON, checks,
sanitising — happens in the writer thread, in ``fast_row`` and, when the server
refused a batch, ``clean_row``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "COLUMNS",
    "COPY_TYPES",
    "LEVELS",
    "MAX_ENTITY_ID_LENGTH",
    "MAX_ENTITY_TYPE_LENGTH",
    "MAX_TEXT_LENGTH",
    "PG_EPOCH_US",
    "Category",
    "Entity",
    "Record",
    "clean_row",
    "coerce_entity",
    "describe",
    "fast_row",
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

MAX_ENTITY_TYPE_LENGTH = 100
MAX_ENTITY_ID_LENGTH = 255
# Longer strings are cut (and the record counted as sanitised): one runaway message
# must not turn into a 10 MB row that slows every batch behind it.
MAX_TEXT_LENGTH = 100_000
MAX_DETAILS_DEPTH = 32


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
    elif isinstance(value, tuple | list) and len(value) == 2:
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
    return kind, ident


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


def logged_at_datetime(logged_at: int) -> dt.datetime:
    """The ``datetime`` of a record's ``logged_at``."""
    return _PG_EPOCH + dt.timedelta(microseconds=logged_at)


_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


# --- sanitising (writer thread only) -------------------------------------------------

_SURROGATES = re.compile("[\ud800-\udfff]")


def _clean_text(text: str) -> str:
    """Text PostgreSQL accepts: no NUL, no lone surrogates, at most MAX_TEXT_LENGTH."""
    if len(text) > MAX_TEXT_LENGTH:
        text = text[:MAX_TEXT_LENGTH] + f"... [truncated {len(text) - MAX_TEXT_LENGTH} chars]"
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii() and _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text


def _json_default(value: object) -> object:
    """Stand-ins for values JSON has no form for: documented in docs/reliability.md."""
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
    return _safe_repr(value)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


class _Cleaner:
    """Builds a JSON-safe copy of details, noting whether anything had to be replaced
    (bad text, NaN, a cycle, too deep); documented stand-ins such as ISO dates do not count."""

    def __init__(self) -> None:
        self.changed = False
        self._enclosing: set[int] = set()

    def text(self, text: str) -> str:
        cleaned = _clean_text(text)
        self.changed = self.changed or cleaned is not text
        return cleaned

    def value(self, value: object, depth: int) -> object:
        """``value`` as stored; ``depth`` counts the containers around it (details: 0)."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            try:
                int.__str__(value)
            except ValueError:  # more digits than Python will print
                self.changed = True
                return f"<int of {value.bit_length()} bits>"
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            self.changed = True
            return repr(value)
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
        return self.text(key) if isinstance(key, str) else self.text(_safe_repr(key))


def _is_flat(details: Mapping[str, Any]) -> bool:
    # Containers inside details go the careful way: only it enforces the depth limit and
    # stores non-string keys as their repr, as the rules say. Flat details (the usual
    # case) keep the fast json.dumps.
    return not any(
        isinstance(v, Mapping | list | tuple | set | frozenset) for v in details.values()
    )


def _jsonb(details: Mapping[str, Any]) -> tuple[bytes, bool]:
    """The details as a binary jsonb field, and whether they had to be sanitised."""
    if _is_flat(details):
        try:
            text = json.dumps(details, ensure_ascii=False, default=_json_default, allow_nan=False)
            # jsonb refuses \u0000; encode() refuses lone surrogates.
            if "\\u0000" not in text and len(text) <= MAX_TEXT_LENGTH:
                return b"\x01" + text.encode(), False
        except (ValueError, TypeError, RecursionError, UnicodeEncodeError):
            pass  # NaN, bad text, huge ints: the careful path below handles each
    cleaner = _Cleaner()
    text = json.dumps(cleaner.value(details, 0), ensure_ascii=False, allow_nan=False)
    if len(text) > MAX_TEXT_LENGTH:
        cleaner.changed = True
        text = json.dumps({"truncated": _clean_text(text)}, ensure_ascii=False)
    return b"\x01" + text.encode(), cleaner.changed


def default_message(record: Record) -> str:
    """The message of a ``created()`` or ``linked()`` call that gave none."""
    subject = f"{record[8]} {record[9]}"
    if record[1] == "LINKED":
        return f"{subject} linked to {record[10]} {record[11]}"
    return f"{subject} {record[1].lower()}"


def _with_message(record: Record) -> Record:
    if record[3] is not None:
        return record
    return (*record[:3], default_message(record), *record[4:])


def fast_row(record: Record) -> tuple[tuple[object, ...], bool]:
    """The COPY row for ``record``, checking only what the server would accept anyway.

    Most records go to COPY as they are. NUL characters and lone surrogates are not
    looked for here: the server (or the encoder) refuses them, and the writer then
    retries the batch with ``clean_row``. Returns the row and whether it was sanitised.
    """
    if record[3] is None:
        record = _with_message(record)
    elif len(record[3]) > MAX_TEXT_LENGTH:
        return clean_row(record)
    details = record[12]
    if details is None:
        return record, False
    payload, changed = _jsonb(details)
    return (*record[:12], payload), changed


def _clean_optional(text: str | None) -> str | None:
    return None if text is None else _clean_text(text)


def clean_row(record: Record) -> tuple[tuple[object, ...], bool]:
    """The COPY row for ``record`` with every text made storable; and whether anything
    had to change."""
    record = _with_message(record)
    texts = record[3:4] + record[7:12]  # message, job_name, entity and related columns
    message, job_name, entity_type, entity_id, related_type, related_id = cleaned = tuple(
        map(_clean_optional, texts)
    )
    changed = any(a is not b for a, b in zip(cleaned, texts, strict=True))
    payload: bytes | None = None
    if record[12] is not None:
        payload, details_changed = _jsonb(record[12])
        changed = changed or details_changed
    row = (
        *record[:3],
        message,
        *record[4:7],
        job_name,
        entity_type,
        entity_id,
        related_type,
        related_id,
        payload,
    )
    return row, changed


def describe(record: Record) -> dict[str, object]:
    """A JSON-ready form of ``record`` for dead letters and diagnostics."""
    record = _with_message(record)
    described: dict[str, object] = dict(zip(COLUMNS, record, strict=True))
    described["logged_at"] = logged_at_datetime(record[0]).isoformat()
    described["details"] = _Cleaner().value(record[12], 0) if record[12] else None
    for key in ("message", "job_name", "entity_id", "related_id"):
        if isinstance(described[key], str):
            described[key] = _clean_text(str(described[key]))
    return described
