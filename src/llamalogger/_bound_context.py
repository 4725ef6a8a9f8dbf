"""structlog's bound contextvars in the details of every event, direct calls included.

``structlog.contextvars.bind_contextvars(request_id=...)`` binds values that structlog's
``merge_contextvars`` adds to every structlog event, and so to the rows ``PersistToLlamaLog``
stores. Direct calls (``log()``, ``created()``, ``linked()``) and the automatic ``FAILED`` row
of a job never pass through structlog: ``LlamaLogger`` merges the same values into their
details with ``merged()``, unless it was made with ``structlog_context=False``.

structlog keeps one ``ContextVar`` per key ever bound, in the dict
``structlog.contextvars._CONTEXT_VARS`` (since structlog 21.1; a key is never removed, an
unbound one holds ``...``). ``LlamaLogger`` keeps a reference to that dict: while nothing was
ever bound in the process it is empty, and the hot path's check is one truth test.
``structlog.contextvars.get_contextvars()`` would copy the whole context at every call.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from ._records import NOT_DETAILS

__all__ = ["merged", "registry"]

# (registry size when read, the (detail key, ContextVar) pairs worth reading): the registry
# only grows, so its size says when to read it again. One tuple, swapped whole, so that a
# thread never sees the size of one reading with the pairs of another.
_pairs_seen: tuple[int, tuple[tuple[str, ContextVar[Any]], ...]] = (0, ())

# The registry when structlog is missing or does not keep one: always empty, always off.
_NOTHING: dict[str, ContextVar[Any]] = {}


def registry(enabled: bool) -> dict[str, ContextVar[Any]]:
    """structlog's registry of bound contextvars, or an empty dict when ``enabled`` is false
    or this structlog has no such registry (then direct calls get no bound values)."""
    if not enabled:
        return _NOTHING
    try:
        from structlog import contextvars as structlog_contextvars
    except ImportError:  # installed without its dependencies: nothing can be bound
        return _NOTHING
    found = getattr(structlog_contextvars, "_CONTEXT_VARS", None)
    return found if isinstance(found, dict) else _NOTHING


def _read_pairs(registry: dict[str, ContextVar[Any]]) -> tuple[tuple[str, ContextVar[Any]], ...]:
    """The (detail key, ContextVar) pairs of ``registry`` worth reading, kept for next time."""
    global _pairs_seen  # noqa: PLW0603 - one cache for the one registry of the process
    prefix = len("structlog_")  # structlog.contextvars.STRUCTLOG_KEY_PREFIX
    # copy(): another thread may bind a new key while this one reads the registry.
    current = registry.copy()
    pairs = tuple(
        (name[prefix:], var)
        for name, var in current.items()
        if name[prefix:] not in NOT_DETAILS and not name[prefix:].startswith("_")
    )
    _pairs_seen = (len(current), pairs)
    return pairs


def merged(registry: dict[str, ContextVar[Any]], details: dict[str, Any]) -> dict[str, Any]:
    """``details`` with the values bound in the current context added under their keys;
    a key ``details`` has already keeps its value (an explicit keyword argument wins).

    Keys that ``PersistToLlamaLog`` keeps out of details (columns such as ``entity`` or
    ``job_id``, and private ones starting with ``_``) are left out here too, so a bound
    value lands in the same place whichever way the event was logged. ``details`` is the
    caller's own ``**details`` dict and is filled in place.
    """
    size, pairs = _pairs_seen
    if size != len(registry):
        pairs = _read_pairs(registry)
    for key, var in pairs:
        if key not in details:
            value = var.get(...)
            if value is not ...:
                details[key] = value
    return details
