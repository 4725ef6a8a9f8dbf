"""The parent a task's message names, read as untrusted: a refused one is warned about and
taken as absent. Shared by the Celery, RQ and Dramatiq integrations.

Whoever can publish to a queue writes these headers. Headers that ``JobContext.from_headers``
refuses (an invalid id, a job that is its own parent, a root without a parent) place the
task as if the message carried none: under the queue's own parent where it has one
(Celery's ``parent_id``), else as a root. One warning per such message says so, on the
integration's logger (a child of ``llamalogger``), so that a misplaced task is never silent.
"""

from __future__ import annotations

import logging

from llamalogger import JobContext

__all__ = ["parent_from"]


def parent_from(headers: object, task_id: object, reporter: logging.Logger) -> JobContext | None:
    """The job ``headers`` name as the parent of task ``task_id``, or ``None`` (no headers,
    or refused: then one warning on ``reporter``)."""

    def refused(reason: str) -> None:
        reporter.warning(
            "llamalogger: the job headers of task %.100r were refused and are ignored (%s); "
            "the task is placed as if its message carried none",
            task_id,
            reason,
        )

    return JobContext.from_untrusted_headers(headers, on_refused=refused)
