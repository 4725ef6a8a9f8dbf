"""Dramatiq with a real worker (``dramatiq dramatiq_app:broker``: two processes, two threads each).

One worker per PostgreSQL server runs the whole workload (a message that sends children,
the same sent inside a plain job, retries, failures, bursts of events spread over both
worker processes); the test process waits until Redis holds none of the run's messages,
stops the worker warmly and reads the rows. Dramatiq runs on Redis here: without one
answering on 127.0.0.1:6379 these tests are skipped.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workers"))

pytest.importorskip("dramatiq")

import harness
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from redis import Redis

from fixtures.database import job_rows, migrated_schema, rows
from fixtures.waiting import wait_until
from llamalogger import LlamaLogger
from llamalogger.integrations.dramatiq import OPTION_KEY, instrument

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not harness.answers(6379),
        reason="the Dramatiq tests run on Redis, and none answers on 127.0.0.1:6379",
    ),
]

ARTISTS = 3
BURSTS = 16
BURST_EVENTS = 25
WAIT_MS = 60_000  # for the whole workload: generous for 2 shared cores, never unbounded


Outcome = harness.Outcome


@pytest.fixture(scope="module")
def outcome(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """Sends the workload, runs one worker over it until it is done, returns the rows."""
    name = harness.run_id()
    broker = RedisBroker(url=harness.REDIS, namespace=name)

    def send(actor: str, *args: object, **fields: Any) -> str:
        message = broker.enqueue(
            Message(name, actor, args, {}, fields.pop("options", {}), **fields)
        )
        return message.message_id

    with migrated_schema(dsn) as schema:
        folder = tmp_path_factory.mktemp("dramatiq")
        worker = harness.WorkerProcess(
            ["-m", "dramatiq", "dramatiq_app:broker", "--processes", "2", "--threads", "2"],
            {
                "LLAMALOG_DSN": dsn,
                "LLAMALOG_SCHEMA": schema,
                "LLAMALOG_TEST_REDIS": harness.REDIS,
                "LLAMALOG_TEST_NAMESPACE": name,
                "LLAMALOG_TEST_QUEUE": name,
            },
            folder / "worker.log",
        )
        try:
            # Both worker processes consume before anything is sent, so both run messages.
            assert wait_until(
                lambda: worker.output().count("Worker process is ready for action.") == 2, 60
            ), worker.output()
            with LlamaLogger(dsn, schema=schema) as logger:
                instrument(broker, logger)  # this side only sends: the job goes along
                ids = {
                    "album": send("import_album", "a", ARTISTS),
                    "flaky": send("flaky", "f", 2),
                    "doomed": send("doomed", "d"),
                    "reports": send("reports_then_raises", "r"),
                }
                for n in range(BURSTS):
                    ids[f"burst{n}"] = send("burst", "burst", BURST_EVENTS)
                for key in harness.HOSTILE:
                    message_id, headers = harness.hostile(key)
                    ids[f"hostile-{key}"] = send(
                        "link_artist", "h", 0, message_id=message_id, options={OPTION_KEY: headers}
                    )
                with logger.job("import-catalogue") as outer:
                    logger.log("CREATED", "catalogue import started")
                    ids["nested"] = send("import_album", "b", ARTISTS)
                    ids["outer"] = outer.job_id
                assert logger.flush(10)
            broker.join(name, timeout=WAIT_MS)
            assert worker.stop() == 0, worker.output()
            log = worker.log.read_text(errors="replace")
            yield Outcome(rows(dsn, schema), ids, job_rows(dsn, schema), log)
        finally:
            if worker.process.poll() is None:
                worker.kill()
            redis = Redis.from_url(harness.REDIS)
            keys = list(redis.scan_iter(f"{name}*"))
            if keys:
                redis.delete(*keys)
            broker.close()


def test_every_event_of_every_worker_process_arrives(outcome: Outcome) -> None:
    """Two worker processes, each message delivered at its end: every event is stored once."""
    tags = Counter((row["details"] or {}).get("tag") for row in outcome.rows)
    assert tags["a"] == 1 + ARTISTS
    assert tags["b"] == 1 + ARTISTS
    assert tags["f"] == 3
    assert tags["d"] == 2
    assert tags["r"] == 1
    assert tags["burst"] == BURSTS * (1 + BURST_EVENTS)
    pids = {row["details"]["pid"] for row in outcome.rows if "pid" in (row["details"] or {})}
    assert len(pids) == 2  # both worker processes ran messages


def test_job_id_is_the_message_id(outcome: Outcome) -> None:
    """Every row logged while a message ran carries Dramatiq's message id as its job id."""
    oracle = [row for row in outcome.rows if "message_id" in (row["details"] or {})]
    assert len(oracle) == 2 * (1 + ARTISTS) + 3 + 2 + 1 + BURSTS + len(harness.HOSTILE)
    assert all(row["job_id"] == row["details"]["message_id"] for row in oracle)
    for n in range(BURSTS):
        assert len(outcome.of_job(outcome.ids[f"burst{n}"])) == 1 + BURST_EVENTS


def test_a_message_sent_inside_a_job_is_its_child(outcome: Outcome) -> None:
    """Children sent by a message hang under it; a tree sent in a plain job under that job."""
    harness.assert_sent_trees_hang_together(outcome, ARTISTS)
    album = outcome.of_job(outcome.ids["album"])
    assert {(row["parent_job_id"], row["root_job_id"]) for row in album} == {
        (None, outcome.ids["album"])
    }


def test_retries_stay_one_job_and_fail_once(outcome: Outcome) -> None:
    """Each attempt is the same job; each retry one SKIPPED event; FAILED once, at the end."""
    flaky = outcome.of_job(outcome.ids["flaky"])
    assert Counter(row["category"] for row in flaky) == {"ENRICHED": 3, "SKIPPED": 2}
    skipped = [row for row in flaky if row["category"] == "SKIPPED"]
    assert [row["details"]["attempt"] for row in skipped] == [1, 2]
    assert {row["level"] for row in skipped} == {"warning"}
    assert skipped[0]["details"]["max_retries"] == 3
    assert skipped[0]["details"]["exception_type"] == "ConnectionError"
    doomed = outcome.of_job(outcome.ids["doomed"])
    assert Counter(row["category"] for row in doomed) == {"ENRICHED": 2, "SKIPPED": 1, "FAILED": 1}
    failed = doomed[-1]
    assert failed["category"] == "FAILED"
    assert failed["details"]["exception_type"] == "LookupError"
    assert "cover art not found" in failed["details"]["exception"]


def test_a_failure_the_actor_reported_is_not_recorded_twice(outcome: Outcome) -> None:
    """An actor that logged FAILED itself and then raised has that one FAILED event."""
    rows = outcome.of_job(outcome.ids["reports"])
    assert [row["category"] for row in rows] == ["ENRICHED", "FAILED"]
    assert rows[1]["message"] == "gave up on the cover"


def test_each_attempt_leaves_a_record_in_the_queues_words(outcome: Outcome) -> None:
    """Job records say what Dramatiq saw: attempts numbered from the message's retries, the
    retried ones marked, the last one's outcome with its error; every message has one."""
    ids = outcome.ids
    assert outcome.attempts(ids["flaky"]) == [
        (1, "retried", "ConnectionError"),
        (2, "retried", "ConnectionError"),
        (3, "succeeded", None),
    ]
    assert [status for _, status, _ in outcome.attempts(ids["doomed"])] == ["retried", "failed"]
    assert outcome.attempts(ids["doomed"])[-1][2] == "LookupError"
    assert [status for _, status, _ in outcome.attempts(ids["reports"])][-1] == "failed"
    for n in range(BURSTS):
        assert outcome.attempts(ids[f"burst{n}"]) == [(1, "succeeded", None)]
    assert outcome.attempts(ids["outer"]) == [(1, "succeeded", None)]
    harness.assert_records_agree_with_events(outcome.jobs, outcome.rows)


def test_hostile_options_never_make_a_message_its_own_parent(outcome: Outcome) -> None:
    """Options that from_headers refuses count as none, with one warning each: the message
    is a root; options naming the message itself leave it a root too."""
    harness.assert_hostile_tasks_are_roots(outcome.rows, outcome.ids, outcome.log)
