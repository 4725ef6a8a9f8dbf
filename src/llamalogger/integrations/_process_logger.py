"""The logger of each worker process: the process's own (``llamalogger.get_logger()``, the
default), a ``LlamaLogger``, or a factory of one.

Task-queue workers fork: a logger made before the fork belongs to the parent, so a factory
is called again in each process that asks; a logger given as such is shared (its writer
follows forks itself), and so is the process's own, which a forked child inherits.
Shared by the Celery and Dramatiq integrations; RQ's worker uses ``resolved``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from llamalogger import ConfigurationError, LlamaLogger, get_logger

__all__ = ["LoggerSource", "ProcessLogger", "resolved"]

LoggerSource = LlamaLogger | Callable[[], LlamaLogger]


def resolved(source: LoggerSource, where: str) -> LlamaLogger:
    """The logger ``source`` gives in this process, made now, so that a worker without a
    database fails as it starts, with one message, instead of in every task."""
    if isinstance(source, LlamaLogger):
        return source
    try:
        return source()
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


class ProcessLogger:
    """``get()`` returns this process's logger; ``close()`` closes it if it is this process's."""

    def __init__(self, source: LoggerSource | None, where: str) -> None:
        """``source`` None: the process's own logger (``get_logger()``). The logger is made
        here, in the calling process: ``where`` names the caller in a configuration error."""
        if source is None:
            source = get_logger
        if not isinstance(source, LlamaLogger) and not callable(source):
            raise TypeError(
                f"logger must be a LlamaLogger or a callable that returns one, "
                f"not {type(source).__name__}"
            )
        self.source = source
        self._logger: LlamaLogger | None = resolved(source, where)
        self._pid = os.getpid()
        # Worker threads may ask at the same moment: make only one logger per process.
        self._lock = threading.Lock()

    def get(self) -> LlamaLogger:
        """This process's logger, made by the factory on first use in each process."""
        logger = self._logger
        if logger is not None and (self._pid == os.getpid() or self.source is logger):
            return logger
        with self._lock:
            if self._logger is None or self._pid != os.getpid():
                factory: Callable[[], LlamaLogger] = self.source  # type: ignore[assignment]
                self._logger = factory()
                self._pid = os.getpid()
            return self._logger

    def close(self, timeout: float | None) -> None:
        """Close this process's logger, bounded by ``timeout``; nothing if it has none yet.

        A logger a factory made in another process (the parent, copied by fork) is never
        used here and is left alone.
        """
        logger = self._logger
        if logger is None:
            return
        if self._pid != os.getpid() and self.source is not logger:
            return
        logger.close(timeout)
