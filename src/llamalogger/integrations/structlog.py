"""structlog processors: job ids in every event, and catalogue events stored in ``llama_log``.

::

    import structlog
    from llamalogger.integrations.structlog import PersistToLlamaLog, add_job_context

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            add_job_context,
            PersistToLlamaLog(llama_logger),
            structlog.processors.JSONRenderer(),
        ]
    )
    structlog.get_logger().info("album created", category="created", entity=("album", 12))
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Mapping
from typing import Any

from structlog.typing import EventDict, WrappedLogger

from llamalogger import Category, LlamaLogger, current_job

from . import _default_category, _detail_key

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
    """Store every event that has a ``category`` as a ``llama_log`` row; pass it on unchanged.

    ``category``, ``entity`` and ``related`` come from the event dict, the message from
    ``event`` and the level from the method name (``warn`` is ``warning``; ``exception``,
    ``critical`` and ``fatal`` are ``error``; unknown names are ``info``). The other keys
    go to ``details``, except those in ``NOT_DETAILS``; an ``exc_info`` is stored as
    ``exception``, the traceback text. The job columns come from the current job.

    Events without a category are stored only when ``default_category`` is given: the
    category is what makes an event a catalogue event, so it filters, it never loses
    the event for the processors after this one. An unknown category or a malformed
    entity is a programming error and raises ``ValueError`` at the logging call, as
    ``LlamaLogger.log`` does. Storing only queues the row; no I/O happens here.
    """

    __slots__ = ("_default_category", "_llama_logger")

    def __init__(
        self, llama_logger: LlamaLogger, *, default_category: Category | str | None = None
    ) -> None:
        self._llama_logger = llama_logger
        self._default_category = _default_category(default_category)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        category = event_dict.get("category")
        if category is None:
            category = self._default_category
            if category is None:
                return event_dict
        message = event_dict.get("event")
        details: dict[str, Any] = {
            _detail_key(key): value for key, value in event_dict.items() if key not in NOT_DETAILS
        }
        exc_info = event_dict.get("exc_info")
        if exc_info is not None and "exception" not in details:
            text = _exception_text(exc_info)
            if text is not None:
                details["exception"] = text
        self._llama_logger.log(
            category,
            "" if message is None else message,
            entity=event_dict.get("entity"),
            related=event_dict.get("related"),
            level=_LEVEL_BY_METHOD.get(method_name, "info"),
            **details,
        )
        return event_dict

    def __repr__(self) -> str:
        return (
            f"<PersistToLlamaLog {self._llama_logger!r} default_category={self._default_category}>"
        )
