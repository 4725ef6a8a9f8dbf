"""Dramatiq actors whose module logs through loggers of its own (``own_loggers``) while
the integration holds another (``dramatiq dramatiq_own:broker``)."""

from __future__ import annotations

import os

import dramatiq
import own_loggers
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from llamalogger.integrations.dramatiq import instrument

broker = RedisBroker(
    url=os.environ["LLAMALOG_TEST_REDIS"], namespace=os.environ["LLAMALOG_TEST_NAMESPACE"]
)
broker.add_middleware(CurrentMessage())
if os.environ.get("LLAMALOG_TEST_LOGGER") == "default":
    instrument(broker)  # the process's logger, the one own_loggers.configure()d
else:
    instrument(broker, own_loggers.make_integration_logger)


@dramatiq.actor(broker=broker, queue_name=os.environ["LLAMALOG_TEST_QUEUE"])
def work(tag: str, events: int) -> None:
    message = CurrentMessage.get_current_message()
    assert message is not None
    own_loggers.work(tag, message.message_id, events)
