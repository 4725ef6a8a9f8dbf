"""A job tree as the browser draws it: one compact object per job, children nested.

Shared by the live view (``/api/tree``) and the self-contained file of ``llamalog tree
--html``, so both draw the same data. Attempts' details and events are left to the job
panel, which loads them when a job is opened: a 50,000-job tree stays a few MB.
"""

from __future__ import annotations

from typing import Any

from ..queries import JobNode

__all__ = ["tree_data"]


def _node(job: JobNode) -> dict[str, Any]:
    return {
        "id": job.job_id,
        "name": job.name,
        "status": job.status,
        "start": job.started_at.isoformat(),
        "end": None if job.ended_at is None else job.ended_at.isoformat(),
        "last": job.last_at.isoformat(),
        "seconds": job.seconds,
        "attempts": len(job.attempts),
        "retried": any(attempt.status == "retried" for attempt in job.attempts),
        "failed": job.failed,
        "failures": 0,
        "events": job.events,
        "error_type": job.error_type,
        "error_message": job.error_message,
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
    return {"root": top, "asked": asked}
