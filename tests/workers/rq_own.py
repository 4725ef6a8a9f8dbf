"""An RQ job whose module logs through loggers of its own (``own_loggers``) while the
worker holds another (``rq worker --worker-class rq_own.Worker``, or the documented
``llamalogger.integrations.rq.LlamaWorker``, which takes the process's logger)."""

from __future__ import annotations

import own_loggers
from rq import get_current_job

from llamalogger.integrations.rq import LlamaWorker


class Worker(LlamaWorker):
    """The worker's logger is a third one, made when the worker is."""

    logger_factory = staticmethod(own_loggers.make_integration_logger)


def work(tag: str, events: int) -> None:
    job = get_current_job()
    assert job is not None
    own_loggers.work(tag, job.id, events)
