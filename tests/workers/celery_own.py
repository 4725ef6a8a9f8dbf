"""A Celery app whose tasks log through the task module's own loggers (``own_loggers``)
while the integration holds another (``celery -A celery_own worker``)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from llamalogger.integrations.celery import instrument


def configure(app: Celery) -> None:
    """Broker, result backend and queue from the environment the test gives the worker
    (and uses itself to publish); names private to one run."""
    queue = os.environ["LLAMALOG_TEST_QUEUE"]
    prefix = {"global_keyprefix": os.environ["LLAMALOG_TEST_PREFIX"]}
    app.conf.update(
        broker_url=os.environ["LLAMALOG_TEST_BROKER"],
        result_backend=os.environ["LLAMALOG_TEST_BACKEND"],
        broker_transport_options=prefix,
        result_backend_transport_options=prefix,
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=600,
    )


app = Celery("celery_own")
if "LLAMALOG_TEST_BROKER" in os.environ:  # in a worker started by the tests
    import own_loggers  # its loggers are made here, in the main process, before the fork

    configure(app)
    if os.environ.get("LLAMALOG_TEST_LOGGER") == "default":
        instrument(app)  # the process's logger, the one own_loggers.configure()d
    else:
        instrument(app, own_loggers.make_integration_logger)  # one per pool process


@app.task(bind=True)
def work(self: Any, tag: str, events: int) -> None:
    import own_loggers  # the publisher imports this module too, without a database

    own_loggers.work(tag, self.request.id, events)
