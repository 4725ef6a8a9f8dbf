"""One logger per process, the way ``logging.getLogger`` works: ``get_logger()`` and
``configure()``.

Every module of a worker (a task module, an integration) asks for the same logger, so
one writer delivers the process's events and one close ends them. It is made on first
use, from ``configure(...)`` if that came first, else from the environment
(``LLAMALOG_DSN``, ``LLAMALOG_SCHEMA``). A forked child gets the same object: its writer
starts afresh in the child (the parent's queued events stay the parent's).
"""

from __future__ import annotations

import threading
from typing import Any

from ._errors import ConfigurationError
from ._logger import LlamaLogger

__all__ = ["configure", "get_logger"]

# Made once per process; a lock so that threads asking at the same moment get one logger.
_lock = threading.Lock()
_logger: LlamaLogger | None = None
_options: dict[str, Any] | None = None  # what made it: configure()'s arguments, or {} (env)


def configure(dsn: str | None = None, **options: Any) -> LlamaLogger:
    """Make the process's logger now, as ``LlamaLogger(dsn, **options)``, and return it.

    Call it once, early (where the worker starts, before it forks). The same call again
    returns the same logger; a call with other arguments, or after ``get_logger()`` made
    the logger from the environment, raises ``ConfigurationError``: modules may hold the
    logger already, so replacing it would leave them writing to another one.
    A mistake in the arguments raises here, as ``LlamaLogger`` does.
    """
    global _logger, _options  # noqa: PLW0603 - the process's one logger
    asked = {"dsn": dsn, **options}
    with _lock:
        if _logger is not None:
            if asked == _options:
                return _logger
            made = "configure() with other arguments" if _options else "get_logger()"
            raise ConfigurationError(
                f"the process's logger exists already (made by {made}); configure() must "
                "come first, once: call it where the worker starts, and get_logger() elsewhere"
            )
        _logger = LlamaLogger(dsn, **options)
        _options = asked
        return _logger


def get_logger() -> LlamaLogger:
    """The process's logger: the one ``configure()`` made, else one made now from
    ``LLAMALOG_DSN`` and ``LLAMALOG_SCHEMA`` (``ConfigurationError`` if no DSN is set).

    Cheap after the first call: a task module may call it at import or in every task.
    """
    global _logger, _options  # noqa: PLW0603 - the process's one logger
    logger = _logger
    if logger is not None:
        return logger
    with _lock:
        if _logger is None:
            _logger = LlamaLogger()
            _options = {}
        return _logger


def _forget() -> None:
    """Let the next call make a new logger (for tests); the old one is left as it is."""
    global _logger, _options  # noqa: PLW0603 - the process's one logger
    with _lock:
        _logger = _options = None
