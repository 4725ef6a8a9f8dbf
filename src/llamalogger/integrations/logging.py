"""A stdlib ``logging.Handler`` that stores catalogue events in ``llama_log``.

::

    import logging
    from llamalogger.integrations.logging import LlamaLogHandler

    logging.getLogger("worker").addHandler(LlamaLogHandler(llama_logger))
    logging.getLogger("worker").info(
        "album created", extra={"category": "created", "entity": ("album", 12)}
    )
"""

from __future__ import annotations

import logging
from typing import Any

from llamalogger import Category, LlamaLogger

from . import _default_category, _detail_key, _is_private

__all__ = ["LlamaLogHandler"]

# Attributes every LogRecord has, whatever the Python version (taskName came in 3.12),
# plus the two that Formatter.format() adds; anything else on a record came from extra=.
_STANDARD_ATTRIBUTES: frozenset[str] = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
}
_COLUMN_ATTRIBUTES = frozenset({"category", "entity", "related"})
_NOT_DETAILS = _STANDARD_ATTRIBUTES | _COLUMN_ATTRIBUTES

# llamalogger reports its own trouble to this logger; storing those records through a
# LlamaLogger could loop (a full queue would report the drop it just caused, and so on).
_OWN_LOGGER = "llamalogger"
_OWN_PREFIX = _OWN_LOGGER + "."

# Formats tracebacks when the handler has no formatter of its own.
_DEFAULT_FORMATTER = logging.Formatter()


def _level_name(levelno: int) -> str:
    if levelno < logging.INFO:
        return "debug"
    if levelno < logging.WARNING:
        return "info"
    if levelno < logging.ERROR:
        return "warning"
    return "error"


class LlamaLogHandler(logging.Handler):
    """Store each record as a ``llama_log`` row.

    ``category``, ``entity`` and ``related`` come from ``extra={...}``; the message is
    ``record.getMessage()``; the level is ``debug`` below INFO, ``info`` below WARNING,
    ``warning`` below ERROR and ``error`` from ERROR up. ``details`` holds the other
    ``extra`` values, ``logger`` (the logger's name, unless ``extra`` has its own) and,
    for records with ``exc_info``, ``exception`` (the traceback text); ``level``, which
    ``LlamaLogger.log`` binds itself, becomes ``level_``. Private extras (keys starting
    with ``_``, such as urllib3's ``__urllib3-retry-warning``) are left out.
    The job columns come from the job current where the record is logged.

    A record without a category is a plain log line: it is stored as ``default_category``,
    ``NOTED`` unless given; with ``default_category=None`` only records that have a
    category are stored.
    Records of the ``llamalogger`` logger and its children are never stored: they are
    the library's own diagnostics and storing them could loop. ``emit`` never raises:
    a bad category or entity in ``extra`` goes to ``handleError`` like any handler
    failure. The handler does not own ``llama_logger``; flush and close that yourself.
    """

    def __init__(
        self,
        llama_logger: LlamaLogger,
        *,
        default_category: Category | str | None = Category.NOTED,
        level: int | str = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        self.llama_logger = llama_logger
        self.default_category = _default_category(default_category)

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record`` on the LlamaLogger; failures go to ``handleError``."""
        name = record.name
        if name == _OWN_LOGGER or name.startswith(_OWN_PREFIX):
            return
        try:
            attributes = record.__dict__
            category = attributes.get("category")
            if category is None:
                category = self.default_category
                if category is None:
                    return
            details: dict[str, Any] = {
                _detail_key(key): value
                for key, value in attributes.items()
                if key not in _NOT_DETAILS and not _is_private(key)
            }
            details.setdefault("logger", name)
            if record.exc_info and record.exc_info[0] is not None:
                formatter = self.formatter or _DEFAULT_FORMATTER
                details.setdefault("exception", formatter.formatException(record.exc_info))
            elif record.exc_text:
                details.setdefault("exception", record.exc_text)
            self.llama_logger.log(
                category,
                record.getMessage(),
                entity=attributes.get("entity"),
                related=attributes.get("related"),
                level=_level_name(record.levelno),
                **details,
            )
        except RecursionError:  # as logging.StreamHandler does: do not mask a runaway stack
            raise
        except Exception:
            self.handleError(record)

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<LlamaLogHandler {self.llama_logger!r} ({level})>"
