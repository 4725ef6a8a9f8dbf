"""RQ job functions and a worker class for the RQ tests (``rq worker --worker-class``).

The logger is made at import, in the worker's main process, from ``LLAMALOG_DSN`` and
``LLAMALOG_SCHEMA``; every work horse is a fork of that process and uses it.
"""

from __future__ import annotations

import os
import signal
import time

from redis import Redis
from rq import Retry, get_current_job

from llamalogger import Category, LlamaLogger
from llamalogger.integrations.rq import LlamaQueue, LlamaWorker

logger = LlamaLogger(os.environ["LLAMALOG_DSN"], schema=os.environ["LLAMALOG_SCHEMA"])


class Worker(LlamaWorker):
    logger_factory = staticmethod(lambda: logger)


def oracle(tag: str) -> None:
    job = get_current_job()
    assert job is not None
    logger.log(Category.ENRICHED, "ran", tag=tag, rq_id=job.id, pid=os.getpid())


def import_album(tag: str, artists: int, queue: str) -> None:
    """Enqueues one child job per artist, from inside this job."""
    oracle(tag)
    children = LlamaQueue(queue, connection=Redis.from_url(os.environ["LLAMALOG_TEST_REDIS"]))
    for number in range(artists):
        children.enqueue(link_artist, tag, number, failure_ttl=300)


def link_artist(tag: str, number: int) -> int:
    oracle(tag)
    return number


def flaky(tag: str, failures: int) -> int:
    """Enqueued with ``Retry(max=3)``: fails ``failures`` times, then succeeds."""
    oracle(tag)
    job = get_current_job()
    assert job is not None
    if (job.retries_left or 0) > 3 - failures:
        raise ConnectionError("cover service refused")
    return job.retries_left or 0


def doomed(tag: str) -> None:
    oracle(tag)
    raise LookupError("cover art not found")


def overrun(tag: str) -> None:
    """Runs past its ``job_timeout``: RQ raises JobTimeoutException inside the horse."""
    oracle(tag)
    time.sleep(60)


def killed(tag: str) -> None:
    """Dies like an OOM kill: the FAILED event must come from the worker."""
    oracle(tag)
    assert logger.flush(10)
    os.kill(os.getpid(), signal.SIGKILL)


RETRIES = Retry(max=3)
