"""Celery with real workers: separate ``celery worker`` processes, one per pool kind.

Each lane (pool kind x broker x PostgreSQL server) starts one worker, publishes the same
work (a tree with a chain, a group and a chord; the same tree under a plain job; retries;
failures), waits for Celery's results, stops the worker warmly and then reads the rows.
The tests below check those rows. Every task logs one event with Celery's own view of it
(``request.id``, ``parent_id``, ``root_id``): the oracle the job columns must match.

Brokers: Redis, else RabbitMQ, else kombu's filesystem transport, so the lanes run on a
laptop without any broker; prefork also runs on RabbitMQ and solo on the filesystem
transport whenever those are not the main broker.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workers"))

pytest.importorskip("celery")

import celery_app
import harness
from celery import Celery
from celery.result import AsyncResult

from fixtures.database import job_rows, migrated_schema, rows
from llamalogger import LlamaLogger
from llamalogger.integrations.celery import instrument

pytestmark = pytest.mark.slow

REDIS_UP = harness.answers(6379)
RABBITMQ_UP = harness.answers(5672)
MAIN_BROKER = "redis" if REDIS_UP else "rabbitmq" if RABBITMQ_UP else "filesystem"
WAIT = 60.0  # seconds for any one result: generous for 2 shared cores, never unbounded


@attrs.frozen
class Lane:
    pool: str
    args: tuple[str, ...]
    logger: str  # "instance": made at import, before the fork; "factory": per process
    broker: str = MAIN_BROKER

    def __str__(self) -> str:
        return f"{self.pool}-{self.broker}"


LANES = [
    Lane("prefork", ("-P", "prefork", "-c", "2"), "instance"),
    Lane("prefork-max-tasks-1", ("-P", "prefork", "-c", "2", "--max-tasks-per-child=1"), "factory"),
    Lane("threads", ("-P", "threads", "-c", "4"), "factory"),
    Lane("solo", ("-P", "solo"), "instance"),
]
if RABBITMQ_UP and MAIN_BROKER != "rabbitmq":
    LANES.append(Lane("prefork", ("-P", "prefork", "-c", "2"), "factory", "rabbitmq"))
if MAIN_BROKER != "filesystem":
    LANES.append(Lane("solo", ("-P", "solo"), "factory", "filesystem"))


@attrs.frozen
class Outcome:
    rows: list[dict[str, Any]]
    outer_job_id: str
    ids: dict[str, Any]  # what the test process learnt from Celery's results
    broker: str
    prefork: bool  # time limits need the prefork pool
    jobs: list[dict[str, Any]] = attrs.field(factory=list)  # the job records
    log: str = ""  # the worker's whole output

    def attempts(self, job_id: str) -> list[tuple[int, str, str | None]]:
        return harness.attempts(self.jobs, job_id)

    def oracle(self, tag: str) -> list[dict[str, Any]]:
        return [row for row in self.rows if (row["details"] or {}).get("tag") == tag]

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["job_id"] == job_id]


def _urls(lane: Lane, folder: Path) -> tuple[str, str]:
    broker = {
        "redis": harness.REDIS,
        "rabbitmq": harness.RABBITMQ,
        "filesystem": "filesystem://",
    }[lane.broker]
    backend = harness.REDIS if lane.broker != "filesystem" and REDIS_UP else f"file://{folder}"
    return broker, backend


@pytest.fixture(scope="module", params=LANES, ids=str)
def outcome(
    request: pytest.FixtureRequest, dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outcome]:
    """Runs the whole workload through one worker and returns the rows it produced."""
    lane: Lane = request.param
    folder = tmp_path_factory.mktemp(f"celery-{lane}")
    (folder / "messages").mkdir()
    (folder / "processed").mkdir()
    (folder / "results").mkdir()
    run = harness.run_id()
    broker, backend = _urls(lane, folder / "results")
    with migrated_schema(dsn) as schema:
        app = Celery("publisher", set_as_current=False)
        celery_app.configure(
            app, broker=broker, backend=backend, queue=run, prefix=f"{run}:", folder=str(folder)
        )
        worker = harness.WorkerProcess(
            [
                "-m",
                "celery",
                "-A",
                "celery_app",
                "worker",
                "-Q",
                run,
                "-n",
                f"{run}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "WARNING",
                *lane.args,
            ],
            {
                "LLAMALOG_DSN": dsn,
                "LLAMALOG_SCHEMA": schema,
                "LLAMALOG_TEST_BROKER": broker,
                "LLAMALOG_TEST_BACKEND": backend,
                "LLAMALOG_TEST_QUEUE": run,
                "LLAMALOG_TEST_PREFIX": f"{run}:",
                "LLAMALOG_TEST_FOLDER": str(folder),
                "LLAMALOG_TEST_LOGGER": lane.logger,
            },
            folder / "worker.log",
        )
        try:
            with LlamaLogger(dsn, schema=schema) as logger:
                instrument(app, logger)
                ids = _publish_and_wait(app, logger, worker, "prefork" in lane.args)
                outer_job_id = ids.pop("outer")
                assert logger.flush(10)
            assert worker.stop() == 0, worker.output()
        finally:
            if worker.process.poll() is None:
                worker.kill()
            if lane.broker == "rabbitmq":
                _delete_queue(app, run)
        yield Outcome(
            rows(dsn, schema),
            outer_job_id,
            ids,
            lane.broker,
            "prefork" in lane.args,
            job_rows(dsn, schema),
            worker.log.read_text(errors="replace"),
        )


def _publish_and_wait(
    app: Celery, logger: LlamaLogger, worker: harness.WorkerProcess, prefork: bool
) -> dict[str, Any]:
    def get(task_id: str, propagate: bool = True) -> Any:
        try:
            return AsyncResult(task_id, app=app).get(timeout=WAIT, propagate=propagate)
        except TimeoutError:
            raise AssertionError(f"no result for {task_id}:\n{worker.output()}") from None

    sent = {
        "tree": app.send_task("celery_app.start_tree", ("a",)).id,
        "flaky": app.send_task("celery_app.flaky", ("f", 2)).id,
        "doomed": app.send_task("celery_app.doomed", ("d",)).id,
        "reports": app.send_task("celery_app.reports_then_raises", ("r",)).id,
    }
    if prefork:  # killed by its hard time limit: SIGTERM, then SIGKILL
        sent["overrun"] = app.send_task("celery_app.overrun", ("t",), time_limit=1).id
        sent["killed"] = app.send_task("celery_app.killed", ("k",)).id
    with logger.job("import-album") as outer:
        logger.log("CREATED", "album import started", entity=("album", 1))
        sent["nested"] = app.send_task("celery_app.start_tree", ("b",)).id
        with logger.job("import-disc") as disc:  # a retried task two levels down
            sent["deep-flaky"] = app.send_task("celery_app.flaky", ("g", 1)).id
    for key in harness.HOSTILE:
        task_id, headers = harness.hostile(key)
        sent[f"hostile-{key}"] = app.send_task(
            "celery_app.leaf", ("h", 0), task_id=task_id, headers=headers
        ).id
    ids: dict[str, Any] = {"outer": outer.job_id, "disc": disc.job_id, **sent}
    for tree in ("tree", "nested"):
        published = get(sent[tree])
        ids[f"{tree}-published"] = published
        for task_id in (published["chain"], *published["group"], published["chord"]):
            get(task_id)
    assert get(sent["flaky"]) == 2
    assert get(sent["deep-flaky"]) == 1
    for key in harness.HOSTILE:
        get(sent[f"hostile-{key}"])
    for name in ("doomed", "reports", "overrun", "killed"):
        if name in sent:
            assert isinstance(get(sent[name], propagate=False), Exception)
    return ids


def _delete_queue(app: Celery, queue: str) -> None:
    """RabbitMQ keeps declared queues: remove this run's so runs leave nothing behind."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        channel.queue_delete(queue)
        channel.exchange_delete(queue)


TREE = 11  # start_tree + 3 chain steps + 3 group leaves + 3 chord leaves + the chord body


def test_every_event_arrives(outcome: Outcome) -> None:
    """Every event the tasks logged is in the table, whatever the pool (recycled children too)."""
    tags = Counter((row["details"] or {}).get("tag") for row in outcome.rows)
    assert tags["a"] == TREE
    assert tags["b"] == TREE
    assert tags["f"] == 3  # one per attempt
    assert tags["d"] == 3
    assert tags["r"] == 1
    assert tags["g"] == 2  # deep-flaky: one per attempt
    assert tags["h"] == len(harness.HOSTILE)
    categories = Counter(row["category"] for row in outcome.rows)
    assert categories["SKIPPED"] == 5  # two retries of flaky, two of doomed, one of deep-flaky
    # doomed's (by the integration), reports' own; overrun's and killed's from the main process
    dead = 2 if outcome.prefork else 0
    assert categories["FAILED"] == 2 + dead, [
        (r["job_name"], r["message"]) for r in outcome.rows if r["category"] == "FAILED"
    ]
    assert categories["CREATED"] == 1  # the plain job's event
    # what overrun and killed logged may or may not have left their process before the kill
    others = len(outcome.rows) - tags["t"] - tags["k"]
    assert others == 2 * TREE + 3 + 3 + 1 + 5 + 2 + 1 + dead + 2 + len(harness.HOSTILE)


def test_rows_match_celerys_own_ids(outcome: Outcome) -> None:
    """For a Celery-rooted tree, job/parent/root equal Celery's id/parent_id/root_id."""
    tree = outcome.oracle("a")
    assert len(tree) == TREE
    for row in tree:
        details = row["details"]
        assert row["job_id"] == details["celery_id"]
        assert row["parent_job_id"] == details["celery_parent_id"]
        assert row["root_job_id"] == details["celery_root_id"] == outcome.ids["tree"]
        assert row["job_name"].startswith("celery_app.")


def test_tree_started_in_a_plain_job_hangs_under_it(outcome: Outcome) -> None:
    """A tree published inside a non-Celery job has that job as parent of its root and as root."""
    tree = outcome.oracle("b")
    assert len(tree) == TREE
    start = next(row for row in tree if row["job_id"] == outcome.ids["nested"])
    assert start["parent_job_id"] == outcome.outer_job_id
    for row in tree:
        assert row["root_job_id"] == outcome.outer_job_id
        assert row["job_id"] == row["details"]["celery_id"]
        if row is not start:
            assert row["parent_job_id"] == row["details"]["celery_parent_id"]


def test_chain_group_and_chord_have_their_shape(outcome: Outcome) -> None:
    """Chain steps hang one under the other; group and chord header under the publisher."""
    for tag, key in (("a", "tree"), ("b", "nested")):
        start = outcome.ids[key]
        published = outcome.ids[f"{key}-published"]
        parent_of = {row["job_id"]: row["parent_job_id"] for row in outcome.oracle(tag)}
        last = published["chain"]
        chain = [last]
        while parent_of[chain[-1]] != start:
            chain.append(parent_of[chain[-1]])
        assert len(chain) == 3, "each step is the child of the step before it"
        header = [job for job, parent in parent_of.items() if parent == start]
        assert set(published["group"]) <= set(header)
        assert len(header) == 1 + 3 + 3  # the chain's first step, the group, the chord header
        body_parent = parent_of[published["chord"]]
        chord_header = set(header) - set(published["group"]) - set(chain)
        # Celery publishes the body from the header task that completes the chord (a
        # native chord, Redis) or from its celery.chord_unlock poller (the filesystem lane),
        # a task that logs nothing: then the parent is no task of the tree.
        native = REDIS_UP and outcome.broker != "filesystem"
        if native:
            assert body_parent in chord_header
        else:
            assert body_parent not in parent_of


def test_retries_stay_one_job_and_fail_once(outcome: Outcome) -> None:
    """Each attempt is the same job; a retry is one SKIPPED event; FAILED only at the end."""
    flaky = outcome.of_job(outcome.ids["flaky"])
    assert [row["category"] for row in flaky].count("FAILED") == 0
    retries = [row for row in flaky if row["category"] == "SKIPPED"]
    assert [row["details"]["attempt"] for row in retries] == [1, 2]
    assert all("ConnectionError" in row["message"] for row in retries)
    assert len({(r["parent_job_id"], r["root_job_id"]) for r in flaky}) == 1

    doomed = outcome.of_job(outcome.ids["doomed"])
    failed = [row for row in doomed if row["category"] == "FAILED"]
    assert len(failed) == 1
    assert failed[0]["details"]["exception_type"] == "LookupError"
    assert "cover art not found" in failed[0]["details"]["exception"]
    assert failed[0]["level"] == "error"
    assert [row["category"] for row in doomed].count("SKIPPED") == 2


def test_a_task_that_logged_failed_itself_gets_no_second(outcome: Outcome) -> None:
    """The integration adds no FAILED event to a task that already logged one."""
    rows = outcome.of_job(outcome.ids["reports"])
    assert [row["message"] for row in rows if row["category"] == "FAILED"] == [
        "gave up on the cover"
    ]


def test_every_job_has_one_parent_and_root(outcome: Outcome) -> None:
    """Invariant 7 holds across processes: all rows of a job agree on parent and root."""
    seen: dict[str, set[tuple[Any, Any]]] = defaultdict(set)
    for row in outcome.rows:
        seen[row["job_id"]].add((row["parent_job_id"], row["root_job_id"]))
    assert {job: pairs for job, pairs in seen.items() if len(pairs) > 1} == {}


@pytest.mark.parametrize(
    ("key", "exception_type"),
    [
        ("overrun", "billiard.exceptions.TimeLimitExceeded"),
        ("killed", "billiard.exceptions.WorkerLostError"),
    ],
)
def test_a_task_whose_process_is_killed_gets_one_failed_event(
    outcome: Outcome, key: str, exception_type: str
) -> None:
    """Hard time limit or SIGKILL: the worker's main process records FAILED in the task's job."""
    if not outcome.prefork:
        pytest.skip("hard time limits and lost pool processes need the prefork pool")
    rows = outcome.of_job(outcome.ids[key])
    failed = [row for row in rows if row["category"] == "FAILED"]
    assert len(failed) == 1
    assert failed[0]["details"]["exception_type"] == exception_type
    assert failed[0]["job_name"] == f"celery_app.{key}"
    assert {(row["parent_job_id"], row["root_job_id"]) for row in rows} == {
        (None, outcome.ids[key])
    }


def test_each_attempt_leaves_a_record_in_the_queues_words(outcome: Outcome) -> None:
    """Job records say what Celery saw: attempts numbered from the request's retries, the
    retried ones marked, the last one's outcome with its error; a killed pool process's task
    failed, recorded by the main process."""
    ids = outcome.ids
    assert outcome.attempts(ids["flaky"]) == [
        (1, "retried", "ConnectionError"),
        (2, "retried", "ConnectionError"),
        (3, "succeeded", None),
    ]
    assert outcome.attempts(ids["doomed"]) == [
        (1, "retried", "LookupError"),
        (2, "retried", "LookupError"),
        (3, "failed", "LookupError"),
    ]
    assert outcome.attempts(ids["reports"]) == [(1, "failed", "RuntimeError")]
    if outcome.prefork:
        # Its process killed, the main process records the failure. Past a hard time limit
        # the pool process is terminated first and says so in a record of its own.
        for key, error, own in (
            ("overrun", "billiard.exceptions.TimeLimitExceeded", [(1, "cancelled", None)]),
            ("killed", "billiard.exceptions.WorkerLostError", []),
        ):
            records = [
                (r["attempt"], r["status"], r["error_type"])
                for r in outcome.jobs
                if r["job_id"] == ids[key]
            ]
            assert records.count((1, "failed", error)) == 1
            assert [r for r in records if r != (1, "failed", error)] in ([], own)
    assert outcome.attempts(outcome.outer_job_id) == [(1, "succeeded", None)]
    harness.assert_records_agree_with_events(outcome.jobs, outcome.rows)


def test_hostile_headers_never_make_a_task_its_own_parent(outcome: Outcome) -> None:
    """Refused headers count as none, with one warning each: the task becomes a root
    (it has no Celery parent); headers naming the task itself leave it a root too. No row
    has parent_job_id == job_id."""
    harness.assert_hostile_tasks_are_roots(outcome.rows, outcome.ids, outcome.log)
    assert outcome.attempts(outcome.ids["hostile-itself"]) == [(1, "succeeded", None)]


def test_a_retried_task_deep_in_a_tree_keeps_its_place(outcome: Outcome) -> None:
    """Each attempt of a task two levels down (a plain job, a job, the task) carries the
    same parent and root: the retry's headers are the task's own, which the worker accepts."""
    rows = outcome.of_job(outcome.ids["deep-flaky"])
    assert len(rows) == 2 + 1  # two attempts' oracle events and one SKIPPED
    assert {(row["parent_job_id"], row["root_job_id"]) for row in rows} == {
        (outcome.ids["disc"], outcome.outer_job_id)
    }
