"""Real workers whose task modules log through loggers of their own (the process's logger,
``get_logger()``, and a separate module-level ``LlamaLogger``) while the integration holds
another: every event arrives, in its job, when its task ends (not only at worker exit).

Lanes: Celery prefork with and without ``--max-tasks-per-child=1`` (pool processes that
end with ``os._exit``), RQ's forking worker (a work horse per job, ``os._exit``), and
Dramatiq (two worker processes); each with the integration on a logger of its own and on
the default, the process's logger. The task modules are ``tests/workers/own_loggers.py``.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workers"))

import harness

from fixtures.database import count_rows, migrated_schema, rows
from fixtures.waiting import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not harness.answers(6379), reason="these lanes need Redis on 6379"),
]

TASKS = 8
EVENTS = 40  # per task, half through each of the task module's loggers
WAIT = 90.0  # seconds for the whole workload: generous for 2 shared cores, never unbounded


@attrs.frozen
class Lane:
    queue: str
    args: tuple[str, ...]
    logger: str  # the integration's: "factory" (a third logger) or "default" (get_logger())
    name: str

    def __str__(self) -> str:
        return self.name


LANES = [
    Lane("celery", ("-P", "prefork", "-c", "2"), "factory", "celery-prefork"),
    Lane(
        "celery",
        ("-P", "prefork", "-c", "2", "--max-tasks-per-child=1"),
        "factory",
        "celery-prefork-max-tasks-1",
    ),
    Lane(
        "celery",
        ("-P", "prefork", "-c", "2", "--max-tasks-per-child=1"),
        "default",
        "celery-prefork-max-tasks-1-default",
    ),
    Lane("rq", ("--worker-class", "rq_own.Worker"), "factory", "rq"),
    Lane(
        "rq",
        ("--worker-class", "llamalogger.integrations.rq.LlamaWorker"),
        "default",
        "rq-documented-worker-class",
    ),
    Lane("dramatiq", ("--processes", "2", "--threads", "2"), "factory", "dramatiq"),
    Lane("dramatiq", ("--processes", "2", "--threads", "2"), "default", "dramatiq-default"),
]


@attrs.frozen
class Outcome:
    rows: list[dict[str, Any]]
    delivered_before_stop: bool  # every event was in the table before the worker stopped
    task_ids: list[str]


def _celery(lane: Lane, dsn: str, schema: str, folder: Path) -> Outcome:
    pytest.importorskip("celery")
    from celery import Celery
    from celery.result import AsyncResult

    run = harness.run_id()
    env = {
        "LLAMALOG_TEST_BROKER": harness.REDIS,
        "LLAMALOG_TEST_BACKEND": harness.REDIS,
        "LLAMALOG_TEST_QUEUE": run,
        "LLAMALOG_TEST_PREFIX": f"{run}:",
    }
    worker = _start(
        ["-m", "celery", "-A", "celery_own", "worker", "-Q", run, "-n", f"{run}@%h",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
         *lane.args],
        lane, dsn, schema, env, folder,
    )  # fmt: skip
    try:
        import celery_own

        app = Celery("publisher", set_as_current=False)
        with _environment(env):
            celery_own.configure(app)
        ids = [app.send_task("celery_own.work", ("own", EVENTS)).id for _ in range(TASKS)]
        for task_id in ids:
            AsyncResult(task_id, app=app).get(timeout=WAIT)
        return _finish(worker, dsn, schema, ids)
    finally:
        if worker.process.poll() is None:
            worker.kill()


def _rq(lane: Lane, dsn: str, schema: str, folder: Path) -> Outcome:
    pytest.importorskip("rq")
    from redis import Redis
    from rq import Queue

    run = harness.run_id()
    queue = Queue(run, connection=Redis.from_url(harness.REDIS))
    try:
        ids = [queue.enqueue("rq_own.work", "own", EVENTS).id for _ in range(TASKS)]
        env = {"LLAMALOG_TEST_LOGGER": lane.logger}
        if lane.logger == "default":
            env["LLAMALOG_TEST_CONFIGURE"] = "0"  # rq_own is imported in the horses only
        worker = _start(
            ["-m", "rq.cli", "worker", "--burst", "--url", harness.REDIS,
             "--logging_level", "WARNING", *lane.args, run],
            lane, dsn, schema, env, folder,
        )  # fmt: skip
        try:
            code = worker.process.wait(WAIT)
        finally:
            if worker.process.poll() is None:
                worker.kill()
        assert code == 0, worker.output()
        # A burst worker ends when the queue is empty: what the horses did not deliver
        # before their os._exit would be missing now.
        found = rows(dsn, schema)
        return Outcome(found, len(found) == TASKS * EVENTS, ids)
    finally:
        queue.delete(delete_jobs=True)


def _dramatiq(lane: Lane, dsn: str, schema: str, folder: Path) -> Outcome:
    pytest.importorskip("dramatiq")
    from dramatiq import Message
    from dramatiq.brokers.redis import RedisBroker
    from redis import Redis

    run = harness.run_id()
    broker = RedisBroker(url=harness.REDIS, namespace=run)
    env = {
        "LLAMALOG_TEST_REDIS": harness.REDIS,
        "LLAMALOG_TEST_NAMESPACE": run,
        "LLAMALOG_TEST_QUEUE": run,
    }
    worker = _start(
        ["-m", "dramatiq", "dramatiq_own:broker", *lane.args], lane, dsn, schema, env, folder
    )
    try:
        ids = [
            broker.enqueue(Message(run, "work", ("own", EVENTS), {}, {})).message_id
            for _ in range(TASKS)
        ]
        broker.join(run, timeout=int(WAIT * 1000))
        return _finish(worker, dsn, schema, ids)
    finally:
        if worker.process.poll() is None:
            worker.kill()
        redis = Redis.from_url(harness.REDIS)
        keys = list(redis.scan_iter(f"{run}*"))
        if keys:
            redis.delete(*keys)
        broker.close()


def _start(
    argv: list[str], lane: Lane, dsn: str, schema: str, env: dict[str, str], folder: Path
) -> harness.WorkerProcess:
    environment = {
        "LLAMALOG_DSN": dsn,
        "LLAMALOG_SCHEMA": schema,
        "LLAMALOG_TEST_LOGGER": lane.logger,
    }
    return harness.WorkerProcess(argv, {**environment, **env}, folder / "worker.log")


def _finish(worker: harness.WorkerProcess, dsn: str, schema: str, ids: list[str]) -> Outcome:
    """Waits (bounded) for the events while the worker still runs, then stops it warmly."""
    # The queue's result comes a moment before the task's end hooks have run: wait for
    # the rows, but with the worker and its processes still alive, so that nothing here
    # is delivered by their exit.
    delivered = wait_until(lambda: count_rows(dsn, schema) >= TASKS * EVENTS, 30)
    assert worker.stop() == 0, worker.output()
    return Outcome(rows(dsn, schema), delivered, ids)


class _environment:
    """``os.environ`` with some entries set for the block: the publisher reads the same
    configuration the worker does."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        import os

        for key, value in self._values.items():
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *_: object) -> None:
        import os

        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_RUNNERS: dict[str, Callable[[Lane, str, str, Path], Outcome]] = {
    "celery": _celery,
    "rq": _rq,
    "dramatiq": _dramatiq,
}


@pytest.fixture(scope="module", params=LANES, ids=str)
def outcome(
    request: pytest.FixtureRequest, dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outcome]:
    lane: Lane = request.param
    with migrated_schema(dsn) as schema:
        yield _RUNNERS[lane.queue](lane, dsn, schema, tmp_path_factory.mktemp(lane.name))


def test_every_event_arrives_once_by_the_end_of_its_task(outcome: Outcome) -> None:
    """All events of both task-module loggers are stored, none twice, and they were in the
    table while the worker still ran (delivered at task end, not by the worker's exit)."""
    assert len(outcome.rows) == TASKS * EVENTS
    assert outcome.delivered_before_stop
    keys = Counter((row["details"]["queue_id"], row["details"]["number"]) for row in outcome.rows)
    assert set(keys.values()) == {1}
    via = Counter(row["details"]["via"] for row in outcome.rows)
    assert via == {"get_logger": TASKS * EVENTS // 2, "separate": TASKS * EVENTS // 2}


def test_every_event_is_in_its_tasks_job(outcome: Outcome) -> None:
    """Logged through another logger than the integration's, each event still carries the
    job the integration entered: the queue's own id of its task."""
    assert {row["job_id"] for row in outcome.rows} == set(outcome.task_ids)
    assert all(row["job_id"] == row["details"]["queue_id"] for row in outcome.rows)
    assert all(row["job_name"] for row in outcome.rows)
