"""Celery: every task runs in a job whose id is the task id, placed where Celery places it.

    from llamalogger.integrations.celery import instrument

    instrument(app)  # the process's logger, llamalogger.get_logger(), shared by every module

or ``instrument(app, logger)``, or ``instrument(app, make_logger)`` (called once per worker
process).

What each signal does (Celery 5, ``celery/app/trace.py`` for the order):

* ``before_task_publish``: a message published inside a job carries that job in its headers
  (``JobContext.to_headers``), unless the caller set them. A re-publish of the running task
  (``retry()``, ``replace()``) carries the running job itself, whole (id, parent, root):
  headers naming the task itself say where that job already stands.
* ``task_prerun`` / ``task_postrun``: the task runs in a job named after the task, with the
  task id as job id. Its parent is the job in the headers (their parent, when they name the
  task itself), else Celery's ``parent_id`` / ``root_id``; headers ``from_headers`` refuses
  count as none, with one warning. The job is entered before the body and left after
  ``task_postrun``'s turn comes, so a chain's next task, which Celery publishes after the
  body returns, is a child of this task. The job lives on the request (``task.request``),
  not in a module dict.
* ``task_failure``: one ``FAILED`` event in the task's job, unless the task logged one. When
  the pool process is gone (hard time limit, lost worker), the worker's main process records
  it, from the request it received (``task_received``).
* ``task_retry``: one ``SKIPPED`` event (level ``warning``) naming the attempt and the reason;
  the next attempt is the same job.
* ``worker_process_init``: a logger factory is called in each pool process (the process's
  own logger, the default, is inherited from the main process).
* ``worker_process_shutdown`` / ``worker_shutdown``: the process's logger is closed, bounded.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from typing import Any

from celery import Task as CeleryTask
from celery import signals

from llamalogger import Category, JobContext, JobScope, LlamaLogger, current_job, get_logger

from ._process_logger import LoggerSource, ProcessLogger
from ._untrusted_parent import parent_from

__all__ = ["CeleryInstrumentation", "instrument"]

_HEADERS = JobContext.HEADERS
# Where the running task's job is kept: an attribute of the request (celery's Context), so
# it lives and dies with the request, in whichever thread or process runs it.
_REQUEST_ATTRIBUTE = "_llamalogger_job"
_ATTRIBUTE_ON_APP = "_llamalogger_instrumentation"
_FAILED_ATTRIBUTE = "_llamalogger_failed"  # on a received request: its FAILED event is logged
_reporter = logging.getLogger(__name__)
_WRAPPED = "_llamalogger_delivers"  # on the __call__ that delivers when the body returns


def instrument(
    app: Any,
    logger: LoggerSource | None = None,
    *,
    flush_after_task: bool | None = None,
    close_timeout: float | None = None,
) -> CeleryInstrumentation:
    """Run every task of ``app`` in a job of ``logger``, and close the logger at worker exit.

    ``logger`` defaults to the process's own logger, ``llamalogger.get_logger()``, which the
    task modules use too. It may be a ``LlamaLogger``, or a callable that makes one: that
    is called here, and again in each prefork pool process (``worker_process_init``).
    Either way the logger is made here, at once: without a database (no ``LLAMALOG_DSN``)
    this raises ``ConfigurationError`` and the worker does not start.
    ``flush_after_task``: after each task, deliver the events of every logger of the
    process (or, with the database unreachable, put them in spill files), so that a pool
    process recycled or killed afterwards has lost nothing; bounded like the end of a
    forked child's outermost job; by default on in prefork pool processes only.
    ``close_timeout`` bounds the close at process exit (default: the logger's
    ``exit_timeout``).

    Idempotent: calling it again for the same app and logger returns the same object and
    connects nothing twice; another logger for an instrumented app raises ``ValueError``.
    """
    source = get_logger if logger is None else logger
    existing = getattr(app, _ATTRIBUTE_ON_APP, None)
    if existing is not None:
        if existing.source is not source:
            raise ValueError("this Celery app is already instrumented with another logger")
        return existing  # type: ignore[no-any-return]
    instrumentation = CeleryInstrumentation(
        app,
        source,
        flush_after_task=flush_after_task,
        close_timeout=close_timeout,
    )
    setattr(app, _ATTRIBUTE_ON_APP, instrumentation)
    instrumentation.connect()
    return instrumentation


def _add_job_headers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish``: put the current job into the message headers."""
    if headers is None:
        return
    job = current_job()
    if job is None or any(key in headers for key in _HEADERS):
        return  # outside any job, or the caller chose the parent: never overwrite
    # The running task publishing itself again (retry, replace) gets its own headers
    # too: the worker reads headers that name the task itself as that job's place. Its
    # parent alone would name a root without a parent, which from_headers refuses.
    headers.update(job.to_headers())


def _parent_of(request: Any) -> JobContext | None:
    """The job a task belongs under: our headers, else Celery's own parent and root."""
    task_id = request.get("id")
    headers = {key: value for key in _HEADERS if (value := request.get(key)) is not None}
    # From whoever could publish: refused ones count as none (one warning).
    carried = parent_from(headers, task_id, _reporter) if headers else None
    if carried is not None and carried.job_id == task_id:
        # The task itself (a retry or a replace re-published it): its parent is that
        # job's parent, and a job that had none stays a root.
        if carried.parent_job_id is None:
            return None
        return JobContext(job_id=carried.parent_job_id, root_job_id=carried.root_job_id)
    if carried is not None:
        return carried
    parent_id = request.get("parent_id")
    # Celery makes a retried root task the parent of its own retry: a root it stays.
    if parent_id and parent_id != task_id:
        try:
            return JobContext(job_id=parent_id, root_job_id=request.get("root_id") or parent_id)
        except (ValueError, TypeError):
            return None  # ids from a foreign producer that cannot be job ids: a root
    return None


def _deliver_when_the_body_returns(app: Any, body_returned: Callable[[Any], None]) -> None:
    """Call ``body_returned(task)`` when a task body of ``app`` returns or raises, before
    Celery stores the outcome.

    Celery stores a task's result (so whoever waits for it learns that the task is over)
    before ``task_postrun`` (``celery/app/trace.py``): delivering only there let a reader
    who saw the result miss the events the task had logged, as in issue 18. The tracer
    calls ``task.run`` itself unless the task class has its own ``__call__``; this gives
    the app's base class one that calls what the tracer would have called, then
    ``body_returned``. Calls outside a worker (``task(...)``) are left as they were.
    """
    base = app.Task
    inner = base.__call__
    if getattr(inner, _WRAPPED, False):
        return
    plain = inner is CeleryTask.__call__  # the tracer would have called task.run

    def __call__(task: Any, *args: Any, **kwargs: Any) -> Any:
        if task.request.called_directly:
            return inner(task, *args, **kwargs)
        try:
            return task.run(*args, **kwargs) if plain else inner(task, *args, **kwargs)
        finally:
            body_returned(task)

    setattr(__call__, _WRAPPED, True)
    base.__call__ = __call__


# Final states of a task that did not run to its end (celery.states).
_STOPPED_STATES = frozenset({"REVOKED", "REJECTED", "IGNORED"})


def _task_scope(
    logger: LlamaLogger,
    name: str,
    task_id: str | None,
    parent: JobContext | None,
    retries: object = 0,
) -> JobScope:
    attempt = retries + 1 if isinstance(retries, int) and retries >= 0 else 1
    return logger.task_job(name, job_id=task_id, parent=parent, attempt=attempt)


class CeleryInstrumentation:
    """What ``instrument()`` connects; ``logger`` is the logger of the calling process."""

    def __init__(
        self,
        app: Any,
        source: LoggerSource,
        *,
        flush_after_task: bool | None,
        close_timeout: float | None,
    ) -> None:
        self._process_logger = ProcessLogger(source, "llamalogger.integrations.celery")
        self.app = app
        self.source = source
        self._flush_after_task = flush_after_task
        self._close_timeout = close_timeout
        self._pool_process_pid: int | None = None
        # The requests this (main) process received and still holds, by task id: a task
        # whose pool process dies gets its FAILED event from here. Weak: Celery decides
        # how long a request lives.
        self._received: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    @property
    def logger(self) -> LlamaLogger:
        """This process's logger (made by the factory on first use in each process)."""
        return self._process_logger.get()

    def connect(self) -> None:
        _deliver_when_the_body_returns(self.app, self._body_returned)
        uid = f"llamalogger.celery.{id(self.app)}"
        signals.before_task_publish.connect(
            _add_job_headers, weak=False, dispatch_uid="llamalogger.celery.publish"
        )
        signals.task_prerun.connect(self._enter_task, weak=False, dispatch_uid=f"{uid}.prerun")
        signals.task_postrun.connect(self._leave_task, weak=False, dispatch_uid=f"{uid}.postrun")
        signals.task_failure.connect(self._task_failed, weak=False, dispatch_uid=f"{uid}.failure")
        signals.task_received.connect(self._received_request, weak=False, dispatch_uid=f"{uid}.rcv")
        signals.task_retry.connect(self._task_retried, weak=False, dispatch_uid=f"{uid}.retry")
        signals.worker_process_init.connect(
            self._pool_process_started, weak=False, dispatch_uid=f"{uid}.process_init"
        )
        signals.worker_process_shutdown.connect(
            self._process_ending, weak=False, dispatch_uid=f"{uid}.process_shutdown"
        )
        signals.worker_shutdown.connect(
            self._process_ending, weak=False, dispatch_uid=f"{uid}.shutdown"
        )

    # --- signal handlers ---------------------------------------------------------

    def _ours(self, task: Any) -> bool:
        return getattr(task, "app", None) is self.app

    def _enter_task(self, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        if task is None or not self._ours(task):
            return
        request = task.request
        logger = self.logger
        scope = _task_scope(
            logger, str(task.name), task_id, _parent_of(request), getattr(request, "retries", 0)
        )
        scope.__enter__()
        setattr(request, _REQUEST_ATTRIBUTE, (scope, logger))

    def _leave_task(self, task: Any = None, state: object = None, **_: Any) -> None:
        if task is None:
            return
        entry = vars(task.request).pop(_REQUEST_ATTRIBUTE, None)
        if entry is None:
            return
        scope, logger = entry
        if state is None or state in _STOPPED_STATES:
            # No final state: the process is being terminated (a hard time limit), and the
            # main process records the failure; or the task was revoked, rejected, ignored.
            logger.task_outcome("cancelled")
        scope.__exit__(None, None, None)
        if current_job() is None and self._flushes_after_task():
            logger.task_ended()

    def _body_returned(self, task: Any) -> None:
        """The body of ``task`` returned or raised; Celery is about to store its outcome."""
        entry = getattr(task.request, _REQUEST_ATTRIBUTE, None)
        if entry is not None and self._flushes_after_task():
            entry[1].task_ended()

    def _flushes_after_task(self) -> bool:
        if self._flush_after_task is not None:
            return self._flush_after_task
        return self._pool_process_pid == os.getpid()

    def _running(self, task: Any) -> LlamaLogger | None:
        """The logger of ``task``'s running job, when that job is the current one."""
        entry = getattr(task.request, _REQUEST_ATTRIBUTE, None) if task is not None else None
        if entry is None or current_job() is None:
            return None
        return entry[1]  # type: ignore[no-any-return]

    def _received_request(self, request: Any = None, **_: Any) -> None:
        task_id = getattr(request, "id", None)
        if task_id is not None and self._ours(getattr(request, "task", None)):
            self._received[task_id] = request

    def _task_failed(
        self,
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        if exception is None:
            return
        logger = self._running(sender)
        if logger is not None:
            logger.task_outcome("failed", error=exception)
            if not logger.failed_logged():
                logger.log_exception(exception)
            return
        request = self._received.get(task_id) if task_id is not None else None
        if request is None or getattr(request, _FAILED_ATTRIBUTE, False):
            return  # Celery 5.7 sends task_failure twice for a hard time limit: one event
        setattr(request, _FAILED_ATTRIBUTE, True)
        # The task's process is gone (hard time limit, lost worker): its job is entered
        # again here, with the parent its message named, just long enough for the event.
        headers = getattr(request, "request_dict", None) or {}
        name = str(getattr(request, "name", "") or getattr(sender, "name", "task"))
        logger = self.logger
        retries = headers.get("retries", 0) if isinstance(headers, dict) else 0
        with _task_scope(logger, name, task_id, _parent_of(headers), retries):
            logger.task_outcome("failed", error=exception)
            logger.log_exception(exception)

    def _task_retried(
        self, sender: Any = None, request: Any = None, reason: object = None, **_: Any
    ) -> None:
        logger = self._running(sender)
        if logger is None or str(getattr(sender, "name", "")).startswith("celery."):
            return  # celery's own pollers (chord_unlock) retry by design, not by failing
        attempt = int((request.get("retries") if request is not None else 0) or 0) + 1
        cause = getattr(reason, "exc", None)
        details: dict[str, Any] = {
            "attempt": attempt,
            "max_retries": getattr(sender, "max_retries", None),
            "reason": str(reason),
        }
        if isinstance(cause, BaseException):
            details["exception_type"] = type(cause).__qualname__
        logger.task_outcome("retried", error=cause if isinstance(cause, BaseException) else None)
        logger.log(
            Category.SKIPPED,
            f"attempt {attempt} failed, retrying: {reason}",
            level="warning",
            **details,
        )

    def _pool_process_started(self, **_: Any) -> None:
        self._pool_process_pid = os.getpid()
        self._make_logger_here()

    def _make_logger_here(self) -> None:
        """A factory makes this process's logger now, before the first task."""
        _ = self.logger

    def _process_ending(self, **_: Any) -> None:
        self._process_logger.close(self._close_timeout)
