"""What a task module of a real worker does: it logs through loggers of its own, not the
integration's.

Half of each task's events go through the process's logger (``llamalogger.configure()``
here, ``get_logger()`` in the task), half through a separate module-level ``LlamaLogger``.
Both are made at import (in the worker's main process, before any fork, where the worker
imports this module at start) and hold their events for a minute (``flush_interval=60``):
only the end of the task can deliver them in time. The integration holds a third logger
(``make_integration_logger``), unless the worker module instruments with the default, the
process's logger.
"""

from __future__ import annotations

import os

import llamalogger
from llamalogger import Category, LlamaLogger

_DSN = os.environ["LLAMALOG_DSN"]
_SCHEMA = os.environ["LLAMALOG_SCHEMA"]

# A module a worker imports at start configures the process's logger; one imported only
# in a work horse (RQ's documented worker class made that logger already, from the
# environment) uses it as it is: LLAMALOG_TEST_CONFIGURE=0.
if os.environ.get("LLAMALOG_TEST_CONFIGURE") != "0":
    llamalogger.configure(_DSN, schema=_SCHEMA, flush_interval=60)
separate = LlamaLogger(_DSN, schema=_SCHEMA, flush_interval=60)


def make_integration_logger() -> LlamaLogger:
    """The integration's own logger, made in each process that asks."""
    return LlamaLogger(_DSN, schema=_SCHEMA)


def work(tag: str, queue_id: str, events: int) -> None:
    """``events`` events, alternately through the process's logger and the separate one;
    each names the queue's id of the task, which the rows' job_id must equal."""
    for number in range(events):
        default = number % 2 == 0
        logger = llamalogger.get_logger() if default else separate
        logger.log(
            Category.ENRICHED,
            "logged by the task module",
            tag=tag,
            queue_id=queue_id,
            number=number,
            via="get_logger" if default else "separate",
            pid=os.getpid(),
        )
