"""RQ: every job runs in a llamalogger job whose id is RQ's job id.

    rq worker --worker-class llamalogger.integrations.rq.LlamaWorker   # reads LLAMALOG_DSN

or, in code, ``LlamaWorker(queues, connection=redis, llama_logger=logger).work()``. By
default the worker uses the process's own logger, ``llamalogger.get_logger()``, the one the
job modules use too; a job module with a logger of its own is delivered as well.

* The work horse (RQ forks one per job, and it ends with ``os._exit``) runs the job in a
  job named after the function, with RQ's job id as job id, and waits (bounded) for the
  events of every logger of the process before it exits, so every event of the horse
  arrives.
* A job enqueued inside a job through ``LlamaQueue`` (or with ``meta=job_meta()``) carries
  the enqueuing job in its meta and becomes its child.
* A job that raises gets one ``FAILED`` event (unless it logged one); one that RQ will
  retry gets one ``SKIPPED`` event (level ``warning``) instead. A horse that dies (a hard
  timeout, the OOM killer, SIGKILL) gets its ``FAILED`` event from the worker.
* The worker closes its logger, bounded, when it stops.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, ClassVar

from rq import Queue, Worker
from rq.job import Job

from llamalogger import Category, JobContext, JobScope, LlamaLogger, current_job, get_logger

from ._process_logger import resolved
from ._untrusted_parent import parent_from

__all__ = ["META_KEY", "LlamaQueue", "LlamaWorker", "job_meta"]

_reporter = logging.getLogger(__name__)
META_KEY = "llamalogger"  # job.meta[META_KEY]: the enqueuing job's headers
# job.meta[ATTEMPT_KEY]: the attempt a retried job runs next. RQ counts retries only for
# jobs that return a Retry (number_of_retries); for a raised exception it only counts down
# retries_left, from a maximum it does not keep.
ATTEMPT_KEY = "llamalogger-attempt"


def job_meta() -> dict[str, Any]:
    """``meta=`` for ``Queue.enqueue``: makes the job a child of the current job (if any)."""
    job = current_job()
    return {} if job is None else {META_KEY: job.to_headers()}


class LlamaQueue(Queue):
    """A ``Queue`` whose jobs, when enqueued inside a job, become that job's children."""

    def create_job(self, *args: Any, **kwargs: Any) -> Job:
        job = super().create_job(*args, **kwargs)
        context = current_job()
        if context is not None and META_KEY not in job.meta:  # never overwrite the caller's
            job.meta[META_KEY] = context.to_headers()
        return job


def _parent_of(job: Job) -> JobContext | None:
    # Meta written by something else, or headers from_headers refuses: the job becomes a
    # root (with one warning for refused ones).
    return parent_from((job.meta or {}).get(META_KEY), job.id, _reporter)


def _attempt(job: Job) -> int:
    """Which run of ``job`` this is: 1, then one more after each retry."""
    retries = getattr(job, "number_of_retries", None)
    attempt = retries + 1 if isinstance(retries, int) and retries >= 0 else 1
    noted = (job.meta or {}).get(ATTEMPT_KEY)  # meta may have been written by anyone
    if type(noted) is int and attempt < noted <= 1_000_000:
        attempt = noted
    return attempt


def _scope(logger: LlamaLogger, job: Job) -> JobScope:
    return logger.task_job(
        str(job.func_name), job_id=job.id, parent=_parent_of(job), attempt=_attempt(job)
    )


def _will_retry(job: Job) -> bool:
    return bool(job.retries_left)


class LlamaWorker(Worker):
    """RQ's forking ``Worker``, with every job run in a llamalogger job.

    ``llama_logger=`` gives the logger; without it ``logger_factory`` (a class attribute,
    by default ``llamalogger.get_logger``: the process's own logger, from ``configure()``
    or ``LLAMALOG_DSN``) gives one, when the worker is made: without a database it raises
    ``ConfigurationError`` before any job runs. To configure it for
    ``rq worker --worker-class``, call ``llamalogger.configure()`` in a module the worker
    imports, or subclass and set ``logger_factory``.
    ``close_timeout`` bounds the close when the worker stops (``None``: the logger's
    ``exit_timeout``).
    """

    logger_factory: ClassVar[Callable[[], LlamaLogger]] = get_logger
    close_timeout: ClassVar[float | None] = None

    def __init__(self, *args: Any, llama_logger: LlamaLogger | None = None, **kwargs: Any) -> None:
        self.llama_logger = (
            llama_logger
            if llama_logger is not None
            else resolved(type(self).logger_factory, "llamalogger.integrations.rq.LlamaWorker")
        )
        super().__init__(*args, **kwargs)
        self._llama_pid = os.getpid()

    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        logger = self.llama_logger
        scope = _scope(logger, job)
        scope.__enter__()
        try:
            return bool(super().perform_job(job, queue, *args, **kwargs))
        finally:
            scope.__exit__(None, None, None)
            if self.is_horse:
                # The horse ends with os._exit: no atexit, no finalizer. Deliver (or
                # spill) here, bounded.
                logger.task_ended()

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        exc = exc_info[1] if len(exc_info) > 1 else None
        context = current_job()
        if isinstance(exc, BaseException) and context is not None and context.job_id == job.id:
            self._record_failure(job, exc)
        super().handle_exception(job, *exc_info)

    def handle_job_failure(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        if not self.is_horse and current_job() is None:
            # The horse died before it could say so (killed, out of memory, hard timeout):
            # the worker records the failure in the job, from the outside.
            reason = str(kwargs.get("exc_string") or "work horse ended unexpectedly")
            scope = _scope(self.llama_logger, job)
            with scope:
                self._record_failure(job, reason)
        super().handle_job_failure(job, queue, *args, **kwargs)

    def _record_failure(self, job: Job, failure: BaseException | str) -> None:
        logger = self.llama_logger
        if _will_retry(job):
            logger.task_outcome("retried", error=failure)
            job.meta[ATTEMPT_KEY] = _attempt(job) + 1
            job.save_meta()  # type: ignore[no-untyped-call]
            logger.log(
                Category.SKIPPED,
                f"attempt failed, retrying: {failure}",
                level="warning",
                retries_left=job.retries_left,
                reason=str(failure),
            )
            return
        logger.task_outcome("failed", error=failure)
        if logger.failed_logged():
            return
        if isinstance(failure, BaseException):
            logger.log_exception(failure)
        else:
            logger.log(Category.FAILED, failure.strip(), level="error")

    def teardown(self) -> None:
        super().teardown()  # type: ignore[no-untyped-call]
        if not self.is_horse and self._llama_pid == os.getpid():
            self.llama_logger.close(self.close_timeout)
