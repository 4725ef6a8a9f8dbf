"""What one event is: its category, its record, its entities, and how it is made safe to store.

The record is built on the caller's thread, so it is a plain ``NamedTuple`` holding
raw values (a float timestamp, the details dict as given). Everything costly —
timestamps as datetimes, JSON, sanitising — happens in the writer thread, in
``to_row``.
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
from typing import Any, NamedTuple

import attrs

__all__ = [
    "COLUMNS",
    "LEVELS",
    "MAX_ENTITY_ID_LENGTH",
    "MAX_ENTITY_TYPE_LENGTH",
    "MAX_TEXT_LENGTH",
    "Category",
    "Entity",
    "Record",
    "coerce_entity",
    "to_row",
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


class Record(NamedTuple):
    """One event as the caller logged it, in ``COLUMNS`` order."""

    logged_at: float  # time.time() on the caller's thread
    category: str
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
    details: Mapping[str, Any] | None


COLUMNS: tuple[str, ...] = Record._fields


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
        return sorted(value, key=repr)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, enum.Enum):
        return value.value
    return repr(value)


def _jsonable(value: object, depth: int, seen: set[int]) -> object:
    """A JSON-safe copy of ``value``: cycles, depth, odd keys and bad text replaced."""
    if isinstance(value, str):
        return _clean_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth >= MAX_DETAILS_DEPTH:
        return "[too deep]"
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        if id(value) in seen:
            return "[cycle]"
        seen.add(id(value))
        try:
            if isinstance(value, Mapping):
                return {
                    _clean_text(k if isinstance(k, str) else repr(k)): _jsonable(v, depth + 1, seen)
                    for k, v in value.items()
                }
            items = _json_default(value) if isinstance(value, set | frozenset) else value
            return [_jsonable(v, depth + 1, seen) for v in items]  # type: ignore[attr-defined]
        finally:
            seen.discard(id(value))
    return _jsonable(_json_default(value), depth + 1, seen)


def _details_json(details: Mapping[str, Any]) -> tuple[str, bool]:
    """The details as JSON text for a jsonb column, and whether they had to be sanitised."""
    try:
        text = json.dumps(details, ensure_ascii=False, default=_json_default, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        pass  # cycles, NaN, too deep: the slow path below handles each
    else:
        # jsonb refuses \u0000 and the writer cannot encode lone surrogates.
        clean = "\\u0000" not in text and (text.isascii() or not _SURROGATES.search(text))
        if clean and len(text) <= MAX_TEXT_LENGTH:
            return text, False
    cleaned = _jsonable(details, 0, set())
    text = json.dumps(cleaned, ensure_ascii=False, allow_nan=False)
    if len(text) > MAX_TEXT_LENGTH:
        text = json.dumps({"truncated": _clean_text(text)}, ensure_ascii=False)
    return text, True


def _clean_optional(text: str | None) -> str | None:
    return None if text is None else _clean_text(text)


def to_row(record: Record) -> tuple[tuple[object, ...], bool]:
    """The COPY row for ``record`` and whether anything in it had to be sanitised."""
    message = _clean_text(record.message)
    changed = message is not record.message
    details: str | None = None
    if record.details:
        details, details_changed = _details_json(record.details)
        changed = changed or details_changed
    texts = (
        record.job_name,
        record.entity_type,
        record.entity_id,
        record.related_type,
        record.related_id,
    )
    job_name, entity_type, entity_id, related_type, related_id = cleaned = tuple(
        map(_clean_optional, texts)
    )
    changed = changed or any(a is not b for a, b in zip(cleaned, texts, strict=True))
    row = (
        dt.datetime.fromtimestamp(record.logged_at, dt.UTC),
        record.category,
        record.level,
        message,
        record.job_id,
        record.parent_job_id,
        record.root_job_id,
        job_name,
        entity_type,
        entity_id,
        related_type,
        related_id,
        details,
    )
    return row, changed
