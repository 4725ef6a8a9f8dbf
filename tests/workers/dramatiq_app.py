"""A Dramatiq broker and actors for the worker tests (``dramatiq dramatiq_app:broker``).

Configured from the environment the test gives the worker: ``LLAMALOG_TEST_REDIS`` (the
broker), ``LLAMALOG_TEST_NAMESPACE`` (Redis keys private to one run), ``LLAMALOG_TEST_QUEUE``.
Every actor logs one ``oracle`` event with Dramatiq's own view of the message (its id) and
the worker process's pid, so the tests can compare the rows' job columns with it.
The logger is made by a factory, once in each worker process, at worker boot.
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from llamalogger import Category, LlamaLogger
from llamalogger.integrations.dramatiq import instrument

QUEUE = os.environ.get("LLAMALOG_TEST_QUEUE", "llamalog-test")
BACKOFF = {"min_backoff": 10, "max_backoff": 50}  # milliseconds: retries at once


def make_broker(url: str, namespace: str) -> RedisBroker:
    broker = RedisBroker(url=url, namespace=namespace)
    broker.add_middleware(CurrentMessage())
    return broker


def make_logger() -> LlamaLogger:
    return LlamaLogger(os.environ["LLAMALOG_DSN"], schema=os.environ["LLAMALOG_SCHEMA"])


broker = make_broker(
    os.environ.get("LLAMALOG_TEST_REDIS", "redis://127.0.0.1:6379/0"),
    os.environ.get("LLAMALOG_TEST_NAMESPACE", "llamalog-test"),
)
llama = instrument(broker, make_logger)


def oracle(tag: str, **details: object) -> int:
    """One event in the message's job saying which message and process ran it."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    retries = int(message.options.get("retries", 0))
    llama.logger.log(
        Category.ENRICHED,
        f"{message.actor_name} ran",
        tag=tag,
        message_id=message.message_id,
        attempt=retries,
        pid=os.getpid(),
        **details,
    )
    return retries


@dramatiq.actor(broker=broker, queue_name=QUEUE)
def import_album(tag: str, artists: int) -> None:
    """Sends one child message per artist, from inside this message's job."""
    oracle(tag)
    for number in range(artists):
        link_artist.send(tag, number)


@dramatiq.actor(broker=broker, queue_name=QUEUE)
def link_artist(tag: str, number: int) -> None:
    oracle(tag, number=number)


@dramatiq.actor(broker=broker, queue_name=QUEUE)
def burst(tag: str, events: int) -> None:
    """``events`` events besides the oracle: the tests count every one of them."""
    oracle(tag)
    for number in range(events):
        llama.logger.log(Category.UPDATED, "burst", tag=tag, number=number, pid=os.getpid())
    # Long enough that one worker process cannot take every burst before the other one's
    # idle poll (it backs off up to a second) comes round: both then run some.
    time.sleep(0.25)


@dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=3, **BACKOFF)
def flaky(tag: str, failures: int) -> None:
    """Fails ``failures`` times, then succeeds."""
    if oracle(tag) < failures:
        raise ConnectionError("cover service refused")


@dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=1, **BACKOFF)
def doomed(tag: str) -> None:
    """Always fails: one retry, then the failure."""
    oracle(tag)
    raise LookupError("cover art not found")


@dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0)
def reports_then_raises(tag: str) -> None:
    """Logs its own FAILED event, then raises: the integration must not add a second."""
    oracle(tag)
    llama.logger.log(Category.FAILED, "gave up on the cover", level="error")
    raise RuntimeError("gave up")
