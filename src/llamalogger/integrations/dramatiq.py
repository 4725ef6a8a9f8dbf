"""Dramatiq: every message runs in a job whose id is the message id, under the job that sent it.

    from llamalogger.integrations.dramatiq import instrument

    instrument(broker)  # the process's logger, llamalogger.get_logger(), shared by every module

or ``instrument(broker, logger)``, or ``instrument(broker, make_logger)`` (once per worker
process).

``instrument`` puts a ``LlamaMiddleware`` first in the broker's middleware, so that its
``after_`` hooks, which Dramatiq runs in reverse order, run after every other middleware's:
Retries has decided by then whether a failure is retried, and Pipelines and Callbacks have
sent their next messages from inside the job. Written against llamalogger's public task API
alone (``LlamaLogger.task_job``, ``task_ended``, ``failed_logged``,
``JobContext.from_untrusted_headers``).

* ``before_enqueue``: a message sent inside a job carries that job in its options
  (``message.options["llamalogger"]``), unless the sender set that key. A retry of the running
  message, re-enqueued by Retries, keeps the options it had.
* ``before_process_message`` / ``after_process_message``: the message runs in a job named
  after the actor, with the message id as job id; its parent is the job in its options
  (read as untrusted: invalid options make it a root).
* A failure is one ``FAILED`` event in the message's job, unless the actor logged one; a
  failure that Retries retries is one ``SKIPPED`` event (level ``warning``) instead, and the
  next attempt is the same job.
* After every message, its events are delivered (or spilled), bounded: a worker process killed
  between messages has lost nothing. At worker shutdown the process's logger is closed, bounded.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import attrs
from dramatiq import Broker, Middleware, Worker
from dramatiq.broker import MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import Retries

from llamalogger import Category, JobScope, LlamaLogger, current_job, get_logger

from ._process_logger import LoggerSource, ProcessLogger
from ._untrusted_parent import parent_from

__all__ = ["OPTION_KEY", "LlamaMiddleware", "instrument"]

_reporter = logging.getLogger(__name__)
OPTION_KEY = "llamalogger"  # message.options[OPTION_KEY]: the sending job's headers


def instrument(
    broker: Broker,
    logger: LoggerSource | None = None,
    *,
    flush_after_message: bool = True,
    close_timeout: float | None = None,
) -> LlamaMiddleware:
    """Run every message of ``broker`` in a job of ``logger``; close it at worker shutdown.

    ``logger`` defaults to the process's own logger, ``llamalogger.get_logger()``, which
    the actors' modules use too; it may be a ``LlamaLogger``, or a callable that makes one,
    called once in each worker process. The logger is made here, at once: without a
    database (no ``LLAMALOG_DSN``) this raises ``ConfigurationError`` as the worker starts.
    ``flush_after_message``: deliver the events of every logger of the process before the
    next message (see ``LlamaMiddleware``). ``close_timeout`` bounds the close at worker
    shutdown (default: the logger's ``exit_timeout``). Calling it again for the same broker
    and logger returns the middleware already added; another logger raises ``ValueError``.
    """
    source = get_logger if logger is None else logger
    for existing in broker.middleware:
        if isinstance(existing, LlamaMiddleware):
            if existing.source is not source:
                raise ValueError("this Dramatiq broker is already instrumented with another logger")
            return existing
    middleware = LlamaMiddleware(
        source, flush_after_message=flush_after_message, close_timeout=close_timeout
    )
    if broker.middleware:
        broker.add_middleware(middleware, before=type(broker.middleware[0]))
    else:
        broker.add_middleware(middleware)
    return middleware


def _max_retries(broker: Broker, message: MessageProxy) -> object:
    """The limit Retries applies to ``message``: the message's, the actor's, or its own."""
    if "max_retries" in message.options:
        return message.options["max_retries"]
    actor = broker.actors.get(message.actor_name)
    if actor is not None and "max_retries" in actor.options:
        return actor.options["max_retries"]
    retries = next((m for m in broker.middleware if isinstance(m, Retries)), None)
    return retries.max_retries if retries is not None else None


@attrs.frozen
class _Running:
    """The message a worker thread is processing: its job, and what the job was entered with."""

    scope: JobScope
    logger: LlamaLogger
    retries: int  # message.options["retries"] when it started: Retries raises it on a retry


class LlamaMiddleware(Middleware):
    """The middleware ``instrument`` adds; add it yourself only as the broker's first one.

    ``logger`` is the logger of the calling process (made by the factory on first use);
    ``None``, the process's own, ``llamalogger.get_logger()``.
    """

    def __init__(
        self,
        logger: LoggerSource | None = None,
        *,
        flush_after_message: bool = True,
        close_timeout: float | None = None,
    ) -> None:
        if logger is None:
            logger = get_logger
        self._process_logger = ProcessLogger(logger, "llamalogger.integrations.dramatiq")
        self.source = logger
        self.flush_after_message = flush_after_message
        self.close_timeout = close_timeout
        # A message's before and after hooks run in the worker thread that processes it.
        self._running = threading.local()

    @property
    def logger(self) -> LlamaLogger:
        """This process's logger (a factory is called once per process)."""
        return self._process_logger.get()

    # --- sending -----------------------------------------------------------------

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int) -> None:
        job = current_job()
        if job is None or OPTION_KEY in message.options:
            return  # outside any job, or the sender chose the parent: never overwrite
        if message.message_id == job.job_id:
            return  # the running message retried: the same job, under the parent it had
        message.options[OPTION_KEY] = job.to_headers()

    # --- processing --------------------------------------------------------------

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        _ = self.logger  # a factory makes this process's logger before the first message

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        logger = self.logger
        retries = message.options.get("retries", 0)
        retries = retries if isinstance(retries, int) and retries >= 0 else 0
        scope = logger.task_job(
            str(message.actor_name),
            job_id=message.message_id,
            parent=parent_from(message.options.get(OPTION_KEY), message.message_id, _reporter),
            attempt=retries + 1,
        )
        scope.__enter__()
        self._running.entry = _Running(scope, logger, retries)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        entry = self._leave()
        if entry is None:
            return
        try:
            if exception is not None:
                self._record_failure(broker, message, entry, exception)
        finally:
            self._end(entry)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        entry = self._leave()
        if entry is not None:
            entry.logger.task_outcome("cancelled")  # a middleware skipped it (an age limit)
            self._end(entry)

    def _leave(self) -> _Running | None:
        entry: _Running | None = getattr(self._running, "entry", None)
        self._running.entry = None
        return entry

    def _record_failure(
        self, broker: Broker, message: MessageProxy, entry: _Running, exception: BaseException
    ) -> None:
        logger = entry.logger
        retries = message.options.get("retries", 0)
        if not message.failed and isinstance(retries, int) and retries > entry.retries:
            # Retries re-enqueued the message: this attempt failed, the job goes on.
            attempt = entry.retries + 1
            max_retries = _max_retries(broker, message)
            logger.task_outcome("retried", error=exception)
            logger.log(
                Category.SKIPPED,
                f"attempt {attempt} failed, retrying: {exception}",
                level="warning",
                attempt=attempt,
                max_retries=max_retries,
                reason=str(exception),
                exception_type=type(exception).__qualname__,
            )
            return
        logger.task_outcome("failed", error=exception)
        if not logger.failed_logged():
            logger.log_exception(exception)

    def _end(self, entry: _Running) -> None:
        entry.scope.__exit__(None, None, None)
        if self.flush_after_message and current_job() is None:
            entry.logger.task_ended()

    # --- shutdown ----------------------------------------------------------------

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._process_logger.close(self.close_timeout)
