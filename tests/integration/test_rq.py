"""RQ with a real forking worker (``rq worker --worker-class``) as a separate process.

One burst worker per PostgreSQL server runs the whole workload (a job that enqueues
children, the same under a plain job, retries, a failure, a work horse killed with
SIGKILL) and exits when the queue is empty; the tests then read the rows. RQ needs Redis:
without one answering on 127.0.0.1:6379 these tests are skipped.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workers"))

pytest.importorskip("rq")

import harness
from redis import Redis
from rq import Retry

from fixtures.database import job_rows, migrated_schema, rows
from llamalogger import LlamaLogger
from llamalogger.integrations.rq import META_KEY, LlamaQueue, job_meta

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not harness.answers(6379), reason="RQ needs Redis, and none answers on 127.0.0.1:6379"
    ),
]

ARTISTS = 3


Outcome = harness.Outcome


@pytest.fixture(scope="module")
def outcome(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """Enqueues the workload, runs one burst worker over it, returns the rows."""
    name = harness.run_id()
    redis = Redis.from_url(harness.REDIS)
    queue = LlamaQueue(name, connection=redis)
    with migrated_schema(dsn) as schema:
        try:
            with LlamaLogger(dsn, schema=schema) as logger:
                ids = {
                    "album": queue.enqueue(
                        "rq_jobs.import_album", "a", ARTISTS, name, failure_ttl=300
                    ).id,
                    "flaky": queue.enqueue(
                        "rq_jobs.flaky", "f", 2, retry=Retry(max=3), failure_ttl=300
                    ).id,
                    "doomed": queue.enqueue(
                        "rq_jobs.doomed", "d", retry=Retry(max=1), failure_ttl=300
                    ).id,
                    "killed": queue.enqueue("rq_jobs.killed", "k", failure_ttl=300).id,
                    "overrun": queue.enqueue(
                        "rq_jobs.overrun", "t", job_timeout=1, failure_ttl=300
                    ).id,
                }
                for key in harness.HOSTILE:
                    job_id, headers = harness.hostile(key)
                    ids[f"hostile-{key}"] = queue.enqueue(
                        "rq_jobs.link_artist",
                        "h",
                        0,
                        job_id=job_id,
                        meta={META_KEY: headers},
                        failure_ttl=300,
                    ).id
                with logger.job("import-catalogue") as outer:
                    logger.log("CREATED", "catalogue import started")
                    ids["nested"] = queue.enqueue(
                        "rq_jobs.import_album", "b", ARTISTS, name, failure_ttl=300
                    ).id
                    ids["outer"] = outer.job_id
                assert logger.flush(10)
            folder = tmp_path_factory.mktemp("rq")
            worker = harness.WorkerProcess(
                [
                    "-m",
                    "rq.cli",
                    "worker",
                    "--burst",
                    "--url",
                    harness.REDIS,
                    "--worker-class",
                    "rq_jobs.Worker",
                    "--logging_level",
                    "WARNING",
                    name,
                ],
                {
                    "LLAMALOG_DSN": dsn,
                    "LLAMALOG_SCHEMA": schema,
                    "LLAMALOG_TEST_REDIS": harness.REDIS,
                },
                folder / "worker.log",
            )
            try:
                code = worker.process.wait(120)
            finally:
                if worker.process.poll() is None:
                    worker.kill()
            assert code == 0, worker.output()
            log = (folder / "worker.log").read_text(errors="replace")
            yield Outcome(rows(dsn, schema), ids, job_rows(dsn, schema), log)
        finally:
            queue.delete(delete_jobs=True)


def test_every_event_of_the_work_horses_arrives(outcome: Outcome) -> None:
    """Horses end with os._exit after each job, yet every event they logged is stored."""
    tags = Counter((row["details"] or {}).get("tag") for row in outcome.rows)
    assert tags["a"] == 1 + ARTISTS
    assert tags["b"] == 1 + ARTISTS
    assert tags["f"] == 3
    assert tags["d"] == 2
    assert tags["k"] == 1
    assert tags["t"] == 1
    assert len({row["details"]["pid"] for row in outcome.tagged("a")}) == 1 + ARTISTS


def test_job_id_is_rqs_job_id(outcome: Outcome) -> None:
    """Every row logged in a job carries RQ's id for that job."""
    oracle = [row for row in outcome.rows if "rq_id" in (row["details"] or {})]
    assert oracle
    assert all(row["job_id"] == row["details"]["rq_id"] for row in oracle)


def test_a_job_enqueued_inside_a_job_is_its_child(outcome: Outcome) -> None:
    """Children enqueued by a job hang under it; a tree enqueued in a plain job under that."""
    harness.assert_sent_trees_hang_together(outcome, ARTISTS)


def test_retries_stay_one_job_and_fail_once(outcome: Outcome) -> None:
    """Each attempt is the same job; each retry one SKIPPED event; FAILED once, at the end."""
    flaky = Counter(row["category"] for row in outcome.of_job(outcome.ids["flaky"]))
    assert flaky == {"ENRICHED": 3, "SKIPPED": 2}
    doomed = outcome.of_job(outcome.ids["doomed"])
    assert Counter(row["category"] for row in doomed) == {"ENRICHED": 2, "SKIPPED": 1, "FAILED": 1}
    failed = next(row for row in doomed if row["category"] == "FAILED")
    assert failed["details"]["exception_type"] == "LookupError"
    assert "cover art not found" in failed["details"]["exception"]


def test_a_killed_work_horse_still_gets_its_failed_event(outcome: Outcome) -> None:
    """SIGKILL in the horse: the worker records FAILED in the job, with the same parent/root."""
    rows = outcome.of_job(outcome.ids["killed"])
    failed = [row for row in rows if row["category"] == "FAILED"]
    assert len(failed) == 1
    assert "signal 9" in failed[0]["message"]
    assert len({(row["parent_job_id"], row["root_job_id"]) for row in rows}) == 1


def test_job_meta_carries_the_current_job() -> None:
    """``job_meta()`` is empty outside a job and names the job inside one (no Redis needed)."""
    assert job_meta() == {}
    from llamalogger._context import JobScope

    with JobScope("outer", None, None) as outer:
        assert job_meta() == {META_KEY: outer.to_headers()}


def test_a_job_past_its_timeout_fails_inside_the_horse(outcome: Outcome) -> None:
    """RQ's job_timeout raises in the horse: one FAILED event with its type, nothing lost."""
    rows = outcome.of_job(outcome.ids["overrun"])
    assert [row["category"] for row in rows] == ["ENRICHED", "FAILED"]
    assert rows[1]["details"]["exception_type"] == "rq.timeouts.JobTimeoutException"


def test_each_attempt_leaves_a_record_in_the_queues_words(outcome: Outcome) -> None:
    """Job records say what RQ saw: attempts numbered from RQ's retry count, the retried ones
    marked, the last one's outcome with its error; a killed horse's job failed."""
    ids = outcome.ids
    assert outcome.attempts(ids["flaky"]) == [
        (1, "retried", "ConnectionError"),
        (2, "retried", "ConnectionError"),
        (3, "succeeded", None),
    ]
    assert outcome.attempts(ids["doomed"]) == [
        (1, "retried", "LookupError"),
        (2, "failed", "LookupError"),
    ]
    assert outcome.attempts(ids["overrun"]) == [(1, "failed", "rq.timeouts.JobTimeoutException")]
    ((attempt, status, _),) = outcome.attempts(ids["killed"])
    assert (attempt, status) == (1, "failed")
    killed = next(row for row in outcome.jobs if row["job_id"] == ids["killed"])
    assert "signal 9" in killed["error_message"]
    assert outcome.attempts(ids["album"]) == [(1, "succeeded", None)]
    assert outcome.attempts(ids["outer"]) == [(1, "succeeded", None)]
    harness.assert_records_agree_with_events(outcome.jobs, outcome.rows)


def test_hostile_meta_never_makes_a_job_its_own_parent(outcome: Outcome) -> None:
    """Meta that from_headers refuses counts as none, with one warning each: the job is a
    root; meta naming the job itself leaves it a root too."""
    harness.assert_hostile_tasks_are_roots(outcome.rows, outcome.ids, outcome.log)
