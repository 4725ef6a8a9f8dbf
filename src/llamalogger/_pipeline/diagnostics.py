"""The library's own diagnostics: the stdlib logger ``llamalogger``, never one line per event.

A repeated trouble (rows refused for one reason, an unexpected error) is reported when it
first happens and then at most once a minute, with how often it happened meanwhile; the
counters in ``stats()`` carry the rest.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["Reporter", "diagnostics"]

diagnostics = logging.getLogger("llamalogger")

_QUIET_PERIOD = 60.0


class Reporter:
    """Rate-limited reports, one stream per key."""

    def __init__(self, quiet_period: float = _QUIET_PERIOD) -> None:
        self._quiet_period = quiet_period
        self._lock = threading.Lock()
        self._last: dict[object, float] = {}
        self._suppressed: dict[object, int] = {}

    def report(
        self, key: object, level: int, message: str, *args: object, exc_info: bool = False
    ) -> None:
        """Log ``message`` unless ``key`` was reported within the quiet period (then count it)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._quiet_period:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (%d more like this since the last report)"
            args = (*args, suppressed)
        diagnostics.log(level, message, *args, exc_info=exc_info)

    def once(self, key: object, level: int, message: str, *args: object) -> None:
        """Log ``message`` the first time ``key`` is seen, never again."""
        with self._lock:
            if key in self._last:
                return
            self._last[key] = float("inf")
        diagnostics.log(level, message, *args)
