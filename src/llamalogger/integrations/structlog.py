"""structlog processors: job ids in every event, and every event stored in ``llama_log``.

The configuration docs/integrations.md recommends::

    import logging

    import structlog
    from llamalogger.integrations.structlog import PersistToLlamaLog, add_job_context

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            PersistToLlamaLog(llama_logger),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            add_job_context,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
    structlog.get_logger().info("album created", category="created", entity=("album", 12))
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Mapping

from structlog.typing import EventDict, WrappedLogger

from llamalogger import Category, LlamaLogger, current_job
from llamalogger._records import NOT_DETAILS

from . import _default_category, _is_private

__all__ = ["NOT_DETAILS", "PersistToLlamaLog", "add_job_context"]

# What structlog method names mean as llama_log levels; other names are stored as "info".
_LEVEL_BY_METHOD: Mapping[str, str] = {
    "debug": "debug",
    "info": "info",
    "msg": "info",
    "warning": "warning",
    "warn": "warning",
    "error": "error",
    "exception": "error",
    "critical": "error",
    "fatal": "error",
}

# The keys of an event dict, in order, to those of them that go to details. The events of
# one call site have the same keys in the same order, so a worker has a few dozen shapes;
# looking a shape up costs a third of filtering its keys one by one at every event.
_DETAIL_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {}
_MAX_SHAPES = 1024  # a bound for event dicts whose keys vary (keys made from data)


def _learn_detail_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The keys of ``keys`` that go to details, remembered for the next event of that shape."""
    detail_keys = tuple(key for key in keys if key not in NOT_DETAILS and not _is_private(key))
    if len(_DETAIL_KEYS) >= _MAX_SHAPES:
        _DETAIL_KEYS.clear()
    _DETAIL_KEYS[keys] = detail_keys
    return detail_keys


def add_job_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add ``job_id``, ``parent_job_id``, ``root_job_id`` and ``job_name`` inside a job.

    Inside a job all four keys are added (``parent_job_id`` and ``job_name`` may be
    ``None``), so every event of a job has the same shape; outside any job nothing is
    added. Keys the event already has are left as they are.
    """
    job = current_job()
    if job is not None:
        event_dict.setdefault("job_id", job.job_id)
        event_dict.setdefault("parent_job_id", job.parent_job_id)
        event_dict.setdefault("root_job_id", job.root_job_id)
        event_dict.setdefault("job_name", job.name)
    return event_dict


def _exception_text(exc_info: object) -> str | None:
    """The traceback text for structlog's ``exc_info`` value, as ``format_exc_info`` makes it."""
    if isinstance(exc_info, BaseException):
        lines = traceback.format_exception(exc_info)
    elif isinstance(exc_info, tuple) and len(exc_info) == 3 and exc_info[0] is not None:
        lines = traceback.format_exception(*exc_info)
    elif exc_info:
        current = sys.exc_info()
        if current[0] is None:
            return None
        lines = traceback.format_exception(*current)
    else:
        return None
    return "".join(lines).rstrip("\n")


class PersistToLlamaLog:
    """Store every event as a ``llama_log`` row; pass it on unchanged.

    ``category``, ``entity`` and ``related`` come from the event dict, the message from
    ``event`` and the level from the method name (``warn`` is ``warning``; ``exception``,
    ``critical`` and ``fatal`` are ``error``; unknown names are ``info``). The other keys
    go to ``details``, except those in ``NOT_DETAILS`` and private ones (starting with
    ``_``); an ``exc_info`` is stored as ``exception``, the traceback text. The job
    columns come from the current job.

    An event without a category is a plain log line: it is stored as ``default_category``,
    ``NOTED`` unless given; with ``default_category=None`` only events that have a category
    are stored (the category then filters; it never loses the event for the processors
    after this one). An unknown category or a malformed entity is a programming error and
    raises ``ValueError`` at the logging call, as ``LlamaLogger.log`` does. Storing only
    queues the row; no I/O happens here.
    """

    __slots__ = ("_default_category", "_llama_logger")

    def __init__(
        self,
        llama_logger: LlamaLogger,
        *,
        default_category: Category | str | None = Category.NOTED,
    ) -> None:
        self._llama_logger = llama_logger
        self._default_category = _default_category(default_category)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        # The hot path of structlog users. The details dict goes to log_details(), which
        # takes it over: log(**details) built it a second time, which was most of what this
        # processor cost. Category, level and message are checked there, as log() does.
        # The details are built key by key from plain values, so that the garbage collector
        # never watches them while they are queued (a copy of the event dict would be
        # watched: it held the entity tuple).
        get = event_dict.get
        category = get("category")
        if category is None:
            category = self._default_category
            if category is None:
                return event_dict
        message = get("event")
        if message is None:
            message = ""
        keys = tuple(event_dict)
        detail_keys = _DETAIL_KEYS.get(keys)
        if detail_keys is None:
            detail_keys = _learn_detail_keys(keys)
        details = {key: event_dict[key] for key in detail_keys}
        exc_info = get("exc_info")
        if exc_info is not None and "exception" not in details:
            text = _exception_text(exc_info)
            if text is not None:
                details["exception"] = text
        self._llama_logger.log_details(
            category,
            message,
            details,
            entity=get("entity"),
            related=get("related"),
            level=_LEVEL_BY_METHOD.get(method_name, "info"),
        )
        return event_dict

    def __repr__(self) -> str:
        return (
            f"<PersistToLlamaLog {self._llama_logger!r} default_category={self._default_category}>"
        )
