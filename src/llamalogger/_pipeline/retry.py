"""The retry schedule that delivery and the backlog share: the backoff, what a failed write
means, the one warning when the database stops (and starts again) taking writes (an ERROR
naming the fix when waiting will not help), and the moment ``close()`` stops waiting for it.

Both import this module and never each other.
"""

from __future__ import annotations

import time

import psycopg

from .diagnostics import diagnostics
from .sink import Failure, classify, explain, needs_fix, reason

__all__ = ["FIRST_RETRY_DELAY", "MAX_RETRY_DELAY", "Deadline", "Outage", "failure"]

# Backoff between attempts while the server does not take writes: quick first retries
# for a blip, capped at 0.5 s so that writing resumes within a second of the server
# accepting connections again. An attempt against a server that is down is one refused
# connection, so retrying this often costs nothing worth saving.
FIRST_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 0.5


def failure(exc: Exception) -> Failure:
    """What to do about a failed write. Anything but the server's word or an adapter's
    refusal of a value is a bug: it is raised on, so that the writer reports it and
    counts the batch, instead of retrying it forever."""
    kind = classify(exc)
    if kind is Failure.RETRY and not isinstance(exc, psycopg.Error):
        raise exc
    return kind


class Deadline:
    """When closing stops waiting for the database; none while the logger runs.

    Only the writer sets it (``close()``); delivery and the backlog read it on the writer
    thread, where a retry loop that began before ``close()`` sees it too.
    """

    __slots__ = ("_at",)

    def __init__(self) -> None:
        self._at: float | None = None

    @property
    def at(self) -> float | None:
        return self._at

    def set(self, moment: float) -> None:
        """Stop waiting at ``moment`` (``time.monotonic()``; now: no more waiting)."""
        self._at = moment

    def passed(self) -> bool:
        return self._at is not None and time.monotonic() >= self._at

    def sleep(self, delay: float) -> bool:
        """Wait ``delay`` before the next attempt; True once closing has run out of time."""
        if self._at is not None:
            remaining = self._at - time.monotonic()
            if remaining <= 0:
                return True
            delay = min(delay, remaining)
        time.sleep(delay)
        return False


class Outage:
    """Whether writes are failing: one warning when they start to, one when the reason
    changes (to one not reported yet in this outage: a server that comes back read-only or
    full), one when they work again, and one ERROR per outage for a cause that waiting will
    not cure (``needs_fix``)."""

    __slots__ = ("_kept", "_misconfigured", "_reasons", "_since")

    def __init__(self, kept: str) -> None:
        self._kept = kept  # where events wait meanwhile, for the warning
        self._since: float | None = None
        self._misconfigured = False  # reported at ERROR in this outage
        # Reported in this outage: a reason that comes back is not reported again, so a
        # failure that alternates between two (lost, refused, lost ...) warns twice only.
        self._reasons: set[str] = set()

    @property
    def failing(self) -> bool:
        return self._since is not None

    def failed(self, exc: Exception) -> None:
        fix = needs_fix(exc)
        why = reason(exc)
        if self._since is None:
            self._since = time.monotonic()
            self._reasons.add(why)
            if fix is None:
                diagnostics.warning(
                    "llamalogger cannot write to the database (%s), retrying (events are kept "
                    "%s): %s",
                    why,
                    self._kept,
                    explain(exc),
                )
        elif why not in self._reasons:
            self._reasons.add(why)
            if fix is None:
                diagnostics.warning(
                    "llamalogger still cannot write to the database, now because %s "
                    "(after %.1fs; events are kept %s): %s",
                    why,
                    time.monotonic() - self._since,
                    self._kept,
                    explain(exc),
                )
        if fix is not None and not self._misconfigured:
            # Checked on every failure: an outage that began as a server restart may
            # turn out to be a server that came back without the database.
            self._misconfigured = True
            diagnostics.error(
                "llamalogger cannot write to the database, and waiting will not change "
                "that: %s. To fix: %s. Events are kept %s meanwhile and written once it "
                "is fixed",
                explain(exc),
                fix,
                self._kept,
            )

    def succeeded(self) -> None:
        if self._since is not None:
            diagnostics.warning(
                "llamalogger reached the database again after %.1fs",
                time.monotonic() - self._since,
            )
            self._since = None
            self._misconfigured = False
            self._reasons.clear()

    def forget(self) -> None:
        """A forked child starts without the parent's outage."""
        self._since = None
        self._misconfigured = False
        self._reasons.clear()
