"""A job tree as the browser draws it: one column per field, one row per job, times in
milliseconds since the epoch.

Shared by the live view (``/api/tree``) and the self-contained file of ``llamalog tree
--html``, so both draw the same data. Columns rather than one object per job: no key is
repeated 7,000 times, and neither side builds a dict per job (the page rebuilds its
objects, children nested, in one pass). Only what the tree and the timeline draw is here;
attempts' details and events are left to the job panel, which loads them when a job is
opened. What the page can sum itself (a subtree's failures, a job's events, a finished
job's duration) is not sent.
"""

from __future__ import annotations

import datetime as dt
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..queries import UNFINISHED, JobNode

__all__ = ["COLUMNS", "no_gc_pauses", "tree_data"]

#: The columns of ``jobs``, in the order the docs list them.
COLUMNS = (
    "id",
    "parent",  # the row of its parent job; -1 for the root
    "name",
    "status",
    "start",
    "end",  # null while unfinished
    "last",  # unfinished only: where its bar ends (its last event or record so far)
    "seconds",  # unfinished only: its span so far; the page computes the others'
    "attempts",
    "retried",
    "failed",
    "counts",
    "error_type",
    "error_message",
)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _ms(when: dt.datetime) -> float:
    """Milliseconds since the epoch: what the browser's Date takes, cheaper than ISO text.
    Whole microseconds divided once, so the number prints exactly (and three times faster
    than rounding ``timestamp()``)."""
    return ((when - _EPOCH) // _MICROSECOND) / 1000


@contextmanager
def no_gc_pauses() -> Iterator[None]:
    """Build a tree without the collector's passes: each of its tens of thousands of new
    objects would otherwise trigger one now and then over everything already built (about
    half the time of a 50,000-job tree). It holds no cycles, so nothing is left behind."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def tree_data(root: JobNode, *, asked: str | None = None) -> dict[str, Any]:
    """``{"asked": asked, "jobs": {column: [value per job]}}``: the jobs in depth-first
    order, a parent before its children, children in the tree's order; the root first.
    Iterative, so a deep tree cannot exhaust the stack."""
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    ids, parents, names, statuses = (columns[n] for n in ("id", "parent", "name", "status"))
    starts, ends, lasts, seconds = (columns[n] for n in ("start", "end", "last", "seconds"))
    attempts_, retried, failed, counts = (
        columns[n] for n in ("attempts", "retried", "failed", "counts")
    )
    error_types, error_messages = columns["error_type"], columns["error_message"]
    stack: list[tuple[JobNode, int]] = [(root, -1)]
    while stack:
        job, parent = stack.pop()
        row = len(ids)
        # JobNode's properties read straight from its records: each property would look
        # again, and this runs for every job of a 50,000-job tree.
        attempts = job.attempts
        last = attempts[-1] if attempts else None
        if last is not None and last.status != "retried":
            statuses.append(last.status)
            failed.append(last.status == "failed")
            ends.append(_ms(last.ended_at))
            lasts.append(None)
            seconds.append(None)
        else:
            statuses.append(UNFINISHED)
            failed.append("FAILED" in job.counts)
            ends.append(None)
            lasts.append(_ms(max(job.last_at, last.ended_at) if last else job.last_at))
            seconds.append(job.seconds)
        ids.append(job.job_id)
        parents.append(parent)
        names.append(job.name)
        starts.append(_ms(attempts[0].started_at if attempts else job.first_at))
        attempts_.append(len(attempts))
        retried.append(any(attempt.status == "retried" for attempt in attempts))
        counts.append(job.counts)
        error_types.append(last.error_type if last is not None else None)
        error_messages.append(last.error_message if last is not None else None)
        stack.extend((child, row) for child in reversed(job.children))
    return {"asked": asked, "jobs": columns}
