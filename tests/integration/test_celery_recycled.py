"""Recycled Celery pool processes, many times over: every event is in the table when the
task's result is, and stays there once the process is gone (issue 18, item 5).

One real ``celery worker`` with ``--max-tasks-per-child=1`` (every task in a fresh pool
process that ends with ``os._exit`` after it), the logger made before the fork as
``instrument(app)`` does. The test waits for each result in turn and reads the task's
rows at once: Celery stores a task's result before ``task_postrun``, so a delivery that
only happened there left a reader who waited for the result without the task's events
(one in 180 in issue 18; most tasks here). ``benchmarks/bench_celery.py --recycled N``
runs the same check longer.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import psycopg
import pytest
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workers"))

pytest.importorskip("celery")

import celery_app
import harness
from celery import Celery

from fixtures.database import count_rows, job_rows, migrated_schema

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not harness.answers(6379), reason="these runs use Redis, and none answers on 6379"
    ),
]

POOL = 4
TASKS = 200  # each in a process of its own: a one-in-a-hundred loss shows
WAIT = 60.0  # seconds for any one result: generous for 2 shared cores, never unbounded


@attrs.frozen
class Recycled:
    late: list[str]  # tasks whose event was not in the table when their result was
    events: int  # stored once the worker stopped
    jobs: int
    processes: int  # distinct pool processes that logged


@pytest.fixture(scope="module")
def recycled(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recycled]:
    folder = tmp_path_factory.mktemp("celery-recycled")
    run = harness.run_id()
    with migrated_schema(dsn) as schema:
        app = Celery("publisher", set_as_current=False)
        celery_app.configure(
            app, broker=harness.REDIS, backend=harness.REDIS, queue=run, prefix=f"{run}:",
            folder=str(folder),
        )  # fmt: skip
        worker = harness.WorkerProcess(
            ["-m", "celery", "-A", "celery_app", "worker", "-Q", run, "-n", f"{run}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
             "-P", "prefork", "-c", str(POOL), "--max-tasks-per-child=1"],
            {"LLAMALOG_DSN": dsn, "LLAMALOG_SCHEMA": schema, "LLAMALOG_TEST_BROKER": harness.REDIS,
             "LLAMALOG_TEST_BACKEND": harness.REDIS, "LLAMALOG_TEST_QUEUE": run,
             "LLAMALOG_TEST_PREFIX": f"{run}:", "LLAMALOG_TEST_LOGGER": "instance",
             "LLAMALOG_TEST_SPILL_DIR": str(folder / "spill")},
            folder / "worker.log",
        )  # fmt: skip
        late: list[str] = []
        events_of = sql.SQL("SELECT count(*) FROM {}.llama_log WHERE job_id = %s").format(
            sql.Identifier(schema)
        )
        try:
            sent = [app.send_task("celery_app.leaf", (run, n)) for n in range(TASKS)]
            with psycopg.connect(dsn, autocommit=True) as conn:
                # In the order sent: the pool runs them about in that order, so most of these
                # waits end as the result is stored, and the table is read at that moment.
                for result in sent:
                    try:
                        result.get(timeout=WAIT)
                    except TimeoutError:
                        raise AssertionError(f"no result:\n{worker.output()}") from None
                    row = conn.execute(events_of, (result.id,)).fetchone()
                    if not row or row[0] != 1:
                        late.append(result.id)
            assert worker.stop() == 0, worker.output()
        finally:
            if worker.process.poll() is None:
                worker.kill()
        jobs = job_rows(dsn, schema)
        yield Recycled(
            late,
            count_rows(dsn, schema, "details->>'tag' = %s", (run,)),
            len(jobs),
            len({job["pid"] for job in jobs}),
        )


def test_every_event_is_stored_when_its_tasks_result_is(recycled: Recycled) -> None:
    """A reader who waited for a task's result finds every event the task logged."""
    assert recycled.late == []


def test_nothing_is_lost_when_recycled_processes_exit(recycled: Recycled) -> None:
    """Every event and job record of every recycled pool process is stored."""
    assert recycled.processes == TASKS  # each task ran in a process of its own
    assert recycled.events == TASKS
    assert recycled.jobs == TASKS
