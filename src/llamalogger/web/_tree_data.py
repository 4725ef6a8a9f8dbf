"""A job tree as the browser draws it: one compact object per job, children nested, times
in milliseconds since the epoch.

Shared by the live view (``/api/tree``) and the self-contained file of ``llamalog tree
--html``, so both draw the same data. Attempts' details and events are left to the job
panel, which loads them when a job is opened: a 50,000-job tree stays a few MB.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..queries import UNFINISHED, JobNode

__all__ = ["tree_data"]


def _ms(when: dt.datetime) -> float:
    """Milliseconds since the epoch: what the browser's Date takes, cheaper than ISO text."""
    return round(when.timestamp() * 1000, 3)


def _node(job: JobNode) -> dict[str, Any]:
    # JobNode's properties read straight from its records: each property would look again,
    # and this runs for every job of a 50,000-job tree.
    attempts = job.attempts
    last = attempts[-1] if attempts else None
    finished = last is not None and last.status != "retried"
    if finished:
        assert last is not None
        status, failed = last.status, last.status == "failed"
    else:
        status, failed = UNFINISHED, "FAILED" in job.counts
    return {
        "id": job.job_id,
        "name": job.name,
        "status": status,
        "start": _ms(attempts[0].started_at if attempts else job.first_at),
        "end": _ms(last.ended_at) if finished and last is not None else None,
        # Where an unfinished job's bar ends: its last event or record so far.
        "last": None
        if finished
        else _ms(max(job.last_at, last.ended_at) if last is not None else job.last_at),
        "seconds": None if finished else job.seconds,
        "attempts": len(attempts),
        "retried": any(attempt.status == "retried" for attempt in attempts),
        "failed": failed,
        "failures": 0,
        "events": sum(job.counts.values()),
        "counts": job.counts,
        "error_type": last.error_type if last is not None else None,
        "error_message": last.error_message if last is not None else None,
        "children": [],
    }


def tree_data(root: JobNode, *, asked: str | None = None) -> dict[str, Any]:
    """``{"root": <job>, "asked": asked}``; each job's ``failures`` counts the failed jobs
    of its subtree (itself included). Iterative, so a deep tree cannot exhaust the stack."""
    top = _node(root)
    order: list[tuple[JobNode, dict[str, Any]]] = []
    stack = [(root, top)]
    while stack:
        job, data = stack.pop()
        order.append((job, data))
        for child in job.children:
            child_data = _node(child)
            data["children"].append(child_data)
            stack.append((child, child_data))
    for _job, data in reversed(order):  # children before their parents
        data["failures"] = int(data["failed"]) + sum(c["failures"] for c in data["children"])
        if data["seconds"] is None:  # finished: from its records, as JobNode.seconds says
            data["seconds"] = max(0.0, (data["end"] - data["start"]) / 1000)
    return {"root": top, "asked": asked}
