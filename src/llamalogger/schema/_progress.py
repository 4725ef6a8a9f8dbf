"""Progress of a long step for the person watching: a bar on a terminal, else a line per 10 %."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressDisplay"]

_BAR_WIDTH = 30


class ProgressDisplay:
    """A ``Progress`` callback that writes to ``stream`` (default: standard error).

    On a terminal it redraws one line: a bar, rows done, rows/s and the time left. Elsewhere
    (a log file, CI) it writes a plain line each time another 10 % is done, so logs stay short.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._terminal = self._stream.isatty() if terminal is None else terminal
        self._clock = clock
        self._label: str | None = None
        self._started = 0.0
        self._next_tenth = 1

    def __call__(self, label: str, done: int, total: int) -> None:
        if label != self._label:
            self._label, self._started, self._next_tenth = label, self._clock(), 1
        elapsed = max(self._clock() - self._started, 1e-6)
        rate = done / elapsed
        left = (total - done) / rate if rate > 0 else 0.0
        share = done / total if total else 1.0
        if self._terminal:
            filled = round(_BAR_WIDTH * share)
            bar = "#" * filled + "." * (_BAR_WIDTH - filled)
            end = "\n" if done >= total else ""
            self._stream.write(
                f"\r{label} [{bar}] {share:4.0%} {done:,}/{total:,} rows "
                # ESC [K clears what a longer previous line left on the right.
                f"{rate:,.0f} rows/s ETA {_clock_time(left)}\x1b[K{end}"
            )
            self._stream.flush()
            return
        if share * 10 >= self._next_tenth:
            self._next_tenth = int(share * 10) + 1
            self._stream.write(
                f"{label}: {share:.0%} ({done:,}/{total:,} rows, {rate:,.0f} rows/s, "
                f"ETA {_clock_time(left)})\n"
            )
            self._stream.flush()


def _clock_time(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
