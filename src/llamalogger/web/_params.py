"""Query parameters of the web view, checked before any query runs.

Every parameter has a type and a bound; an unknown parameter, a wrong type or a value out
of bounds is a :class:`BadRequest` whose message names the parameter, answered with 400.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

__all__ = ["MAX_TEXT", "BadRequest", "check_known", "integer", "moment", "text", "token_safe"]

#: The longest id, name or entity a parameter may carry (job ids are varchar(100)).
MAX_TEXT = 200


class BadRequest(ValueError):
    """A request the view refuses: answered with 400 and this message."""


def check_known(params: Mapping[str, str], known: Iterable[str]) -> None:
    """Refuse a parameter the endpoint does not take: a typo must not pass as no filter."""
    allowed = set(known)
    unknown = sorted(set(params) - allowed)
    if unknown:
        taken = ", ".join(sorted(allowed)) or "none"
        raise BadRequest(f"unknown parameter {unknown[0]!r} (this page takes: {taken})")


def token_safe(name: str, value: str) -> str:
    """``value`` if PostgreSQL can take it as text: not empty, not too long, no NUL."""
    if not value:
        raise BadRequest(f"{name} must not be empty")
    if len(value) > MAX_TEXT:
        raise BadRequest(f"{name} is longer than {MAX_TEXT} characters")
    if "\x00" in value:
        raise BadRequest(f"{name} must not contain NUL characters")
    return value


def text(params: Mapping[str, str], name: str) -> str | None:
    """An optional text parameter; an empty value is the same as none."""
    value = params.get(name)
    return token_safe(name, value) if value else None


def integer(params: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    """An optional whole number between ``low`` and ``high``."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, not {value[:40]!r}")
    number = int(value)
    if not low <= number <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, not {number}")
    return number


def moment(params: Mapping[str, str], name: str) -> dt.datetime | None:
    """An optional ISO 8601 time; one without a zone is taken as UTC."""
    value = params.get(name)
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(
            f"{name} must be an ISO 8601 time such as 2026-12-01T02:00:00Z, not {value[:40]!r}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
