"""A Celery app for the worker tests, configured from the environment (see ``configure``).

Run by real ``celery worker`` processes (``-A celery_app``, with this directory on
``PYTHONPATH``) and imported by the tests to publish. Every task logs one ``oracle`` event
with Celery's own view of it (``request.id``, ``parent_id``, ``root_id``), so the tests can
compare the rows' job columns with Celery's tree.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from celery import Celery, chain, chord, group

from llamalogger import Category, LlamaLogger
from llamalogger.integrations.celery import instrument


def configure(
    app: Celery, *, broker: str, backend: str, queue: str, prefix: str, folder: str | None
) -> None:
    """Point ``app`` at a broker and a result backend, with names private to one test run."""
    transport: dict[str, Any] = {"global_keyprefix": prefix}
    if broker.startswith("filesystem") and folder is not None:
        transport = {
            "data_folder_in": os.path.join(folder, "messages"),
            "data_folder_out": os.path.join(folder, "messages"),
            "processed_folder": os.path.join(folder, "processed"),
            "control_folder": os.path.join(folder, "control"),  # default: the working directory
            "store_processed": False,
        }
    app.conf.update(
        broker_url=broker,
        result_backend=backend,
        broker_transport_options=transport,
        result_backend_transport_options={"global_keyprefix": prefix},
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=600,
    )


def make_logger() -> LlamaLogger:
    """The factory the worker passes to ``instrument`` (called once per pool process)."""
    return LlamaLogger(
        os.environ["LLAMALOG_DSN"],
        schema=os.environ["LLAMALOG_SCHEMA"],
        spill_dir=os.environ.get("LLAMALOG_TEST_SPILL_DIR"),  # None: the per-user default
    )


app = Celery("celery_app")
if "LLAMALOG_TEST_BROKER" in os.environ:  # in a worker started by the tests
    configure(
        app,
        broker=os.environ["LLAMALOG_TEST_BROKER"],
        backend=os.environ["LLAMALOG_TEST_BACKEND"],
        queue=os.environ["LLAMALOG_TEST_QUEUE"],
        prefix=os.environ["LLAMALOG_TEST_PREFIX"],
        folder=os.environ.get("LLAMALOG_TEST_FOLDER"),
    )
    if os.environ.get("LLAMALOG_TEST_LOGGER") == "instance":  # made here, before the fork
        llama = instrument(app, make_logger())
    elif os.environ.get("LLAMALOG_TEST_LOGGER") != "none":  # "none": the bare baseline
        llama = instrument(app, make_logger)  # made in each pool process


def oracle(task: Any, **details: Any) -> None:
    """One event in the task's job saying where Celery puts the task."""
    request = task.request
    llama.logger.log(
        Category.ENRICHED,
        f"{task.name} ran",
        celery_id=request.id,
        celery_parent_id=request.parent_id,
        celery_root_id=request.root_id,
        attempt=request.retries,
        **details,
    )


@app.task(bind=True)
def start_tree(self: Any, tag: str) -> dict[str, Any]:
    """A tree rooted here: a chain, a group and a chord, all published from this task."""
    oracle(self, tag=tag)
    chained = chain(step.s(0, tag), step.s(tag), step.s(tag)).apply_async()
    grouped = group(leaf.s(tag, n) for n in range(3)).apply_async()
    chorded = chord(leaf.s(tag, n) for n in range(3, 6))(collect.s(tag))
    return {
        "chain": chained.id,
        "group": [result.id for result in grouped.results],
        "chord": chorded.id,
    }


@app.task(bind=True)
def step(self: Any, value: int, tag: str) -> int:
    oracle(self, tag=tag)
    return value + 1


@app.task(bind=True)
def leaf(self: Any, tag: str, value: int) -> int:
    oracle(self, tag=tag)
    return value


@app.task(bind=True)
def collect(self: Any, values: list[int], tag: str) -> int:
    oracle(self, tag=tag)
    return sum(values)


@app.task(bind=True, max_retries=3)
def flaky(self: Any, tag: str, failures: int) -> int:
    """Fails ``failures`` times, retrying each time, then succeeds."""
    oracle(self, tag=tag)
    if self.request.retries < failures:
        refused = ConnectionError(f"attempt {self.request.retries} refused")
        raise self.retry(exc=refused, countdown=0)
    return self.request.retries


@app.task(bind=True, max_retries=2)
def doomed(self: Any, tag: str) -> None:
    """Always fails: two retries, then the failure."""
    oracle(self, tag=tag)
    raise self.retry(exc=LookupError("cover art not found"), countdown=0)


@app.task(bind=True)
def reports_then_raises(self: Any, tag: str) -> None:
    """Logs its own FAILED event, then raises: the integration must not add a second."""
    oracle(self, tag=tag)
    llama.logger.log(Category.FAILED, "gave up on the cover", level="error")
    raise RuntimeError("gave up")


@app.task(bind=True)
def overrun(self: Any, tag: str) -> None:
    """Runs past its hard time limit: the pool process is killed mid-task."""
    oracle(self, tag=tag)
    time.sleep(60)


@app.task(bind=True)
def killed(self: Any, tag: str) -> None:
    """Its pool process dies as under the OOM killer: SIGKILL, mid-task."""
    oracle(self, tag=tag)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(bind=True)
def empty(self: Any) -> None:
    """Nothing at all: what a task costs the worker (see benchmarks/bench_celery.py)."""
