"""Job records through the real writer into ``llama_job``: one transaction with the events
of their batch, refusal bisection, spill and replay, an unmigrated schema, the counters.

The facade that builds job records when a job ends is not under test here: the records are
built by hand, as ``_records.JobRecord`` lays them out, and queued the way the facade queues
them (``put_apart(fields, details)``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from fixtures.database import rows
from fixtures.waiting import wait_until
from llamalogger._pipeline import Settings, Spill, Writer, open_writer, postgres_sink
from llamalogger._records import JOB, PG_EPOCH_US, logged_at_datetime
from llamalogger.schema import migrate

if TYPE_CHECKING:  # fixtures' types only
    from fixtures.restartable import RestartableServer


# --- records built by hand ----------------------------------------------------------------


def now_us() -> int:
    return time.time_ns() // 1000 - PG_EPOCH_US


def put_event(writer: Writer, number: int, category: str = "CREATED") -> None:
    fields = (now_us(), category, "info", f"event {number}", "job-a", None, "job-a",
              "import", "track", str(number), None, None)  # fmt: skip
    writer.put_apart(fields, {"n": number})


def put_job(
    writer: Writer,
    job_id: str,
    status: str = "succeeded",
    *,
    error: tuple[str, str] | None = None,
    details: dict[str, Any] | None = None,
    attempt: int = 1,
) -> tuple[object, ...]:
    """Queue a job record; returns its fields (without details)."""
    ended = now_us()
    error_type, error_message = error if error is not None else (None, None)
    fields = (ended, JOB, status, error_message, job_id, "job-a", "job-a", "enrich-track",
              "track", job_id, error_type, ended - 1_500_000, attempt, 4242,
              "worker-1")  # fmt: skip
    writer.put_apart(fields, details)
    return fields


def job_rows(dsn: str, schema: str) -> list[dict[str, Any]]:
    query = sql.SQL("SELECT * FROM {}.llama_job ORDER BY id").format(sql.Identifier(schema))
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query).fetchall()


def assert_adds_up(stats: dict[str, int]) -> None:
    """The accounting identity of docs/design.md §5.4, job records included."""
    parts = ("written", "rejected", "dropped", "on_disk", "queued")
    assert stats["enqueued"] == sum(stats[part] for part in parts), stats


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    made: list[Writer] = []
    yield made
    for writer in made:
        writer.close(timeout=2)


@pytest.fixture(params=["own", "pool, autocommit", "pool, transactional"])
def pool(request: pytest.FixtureRequest, dsn: str) -> Iterator[ConnectionPool[Any] | None]:
    """How the sink reaches the server: its own connection, or a user's pool in either mode."""
    if request.param == "own":
        yield None
        return
    kwargs = {"autocommit": request.param.endswith("autocommit")}
    with ConnectionPool(dsn, min_size=1, max_size=1, kwargs=kwargs, open=True) as opened:
        yield opened


def writer_for(
    writers: list[Writer],
    dsn: str,
    schema: str,
    pool: ConnectionPool[Any] | None = None,
    **options: Any,
) -> Writer:
    sink = postgres_sink(dsn=None if pool is not None else dsn, pool=pool, schema=schema)
    writer = open_writer(sink, Settings(**{"spill_dir": Spill.OFF, **options}))
    writers.append(writer)
    return writer


# --- one transaction ---------------------------------------------------------------------------


def test_a_mixed_batch_is_written_in_one_transaction(
    dsn: str, schema: str, pool: ConnectionPool[Any] | None, writers: list[Writer]
) -> None:
    """Events go to llama_log and job records to llama_job, every row of the batch in the
    same transaction (one xmin), with every column of the job as recorded."""
    writer = writer_for(writers, dsn, schema, pool, flush_interval=60)
    recorded = []
    for number in range(40):
        put_event(writer, number)
        if number % 20 == 19:
            status = "failed" if number == 19 else "succeeded"
            error = ("KeyError", "'isrc'") if number == 19 else None
            details = {"queue": "enrich", "n": number}
            recorded.append((put_job(writer, f"job-{number}", status, error=error,
                                     details=details), details))  # fmt: skip
    assert writer.flush(timeout=10)
    stats = writer.stats()
    assert (stats["written"], stats["jobs"], stats["batches"], stats["rejected"]) == (42, 2, 1, 0)
    assert_adds_up(stats)

    assert [row["entity_id"] for row in rows(dsn, schema)] == [str(n) for n in range(40)]
    stored = job_rows(dsn, schema)
    assert len(stored) == 2
    for row, (fields, details) in zip(stored, recorded, strict=True):
        assert row["ended_at"] == logged_at_datetime(fields[0])  # type: ignore[arg-type]
        assert row["started_at"] == row["ended_at"] - dt.timedelta(seconds=1.5)
        assert [row[column] for column in ("status", "error_message", "job_id",
                "parent_job_id", "root_job_id", "job_name", "entity_type", "entity_id",
                "error_type")] == list(fields[2:11])  # fmt: skip
        assert (row["attempt"], row["pid"], row["host"]) == (1, 4242, "worker-1")
        assert row["details"] == details
    assert (stored[0]["status"], stored[0]["error_type"]) == ("failed", "KeyError")

    with psycopg.connect(dsn) as conn:
        transactions = conn.execute(
            sql.SQL(
                "SELECT xmin::text FROM {s}.llama_log UNION SELECT xmin::text FROM {s}.llama_job"
            ).format(s=sql.Identifier(schema))
        ).fetchall()
    assert len(transactions) == 1


def test_a_batch_of_job_records_alone_is_written(
    dsn: str, schema: str, writers: list[Writer]
) -> None:
    writer = writer_for(writers, dsn, schema, flush_interval=60)
    for number in range(3):
        put_job(writer, f"job-{number}", attempt=number + 1, details=None)
    assert writer.flush(timeout=10)
    assert [(row["job_id"], row["attempt"], row["details"]) for row in job_rows(dsn, schema)] == [
        ("job-0", 1, None),
        ("job-1", 2, None),
        ("job-2", 3, None),
    ]
    assert rows(dsn, schema) == []


# --- refused rows --------------------------------------------------------------------------------


def test_a_refused_job_record_is_bisected_and_dead_lettered_while_its_batch_mates_are_written(
    dsn: str, schema: str, writers: list[Writer], tmp_path: Path
) -> None:
    """A status outside llama_job's CHECK costs that record alone: every event and every
    other job of its batch is written exactly once (the refused attempts left nothing
    behind), the NUL in another job's message is cleaned, the bad one is dead-lettered."""
    dead_letters = tmp_path / "dead.jsonl"
    writer = writer_for(writers, dsn, schema, flush_interval=60, dead_letter_path=dead_letters)
    for number in range(30):
        put_event(writer, number)
        if number == 10:
            put_job(writer, "job-good", details={"ok": True})
        if number == 20:
            put_job(writer, "job-bad", "running")
        if number == 25:
            put_job(writer, "job-nul", "failed", error=("ValueError", "bad \x00 byte"))
    assert writer.flush(timeout=20)
    stats = writer.stats()
    assert (stats["written"], stats["rejected"], stats["sanitised"], stats["jobs"]) == (
        32,
        1,
        1,
        3,
    )
    assert_adds_up(stats)
    assert [row["entity_id"] for row in rows(dsn, schema)] == [str(n) for n in range(30)]
    assert [(row["job_id"], row["error_message"]) for row in job_rows(dsn, schema)] == [
        ("job-good", None),
        ("job-nul", "bad \ufffd byte"),
    ]
    (line,) = dead_letters.read_text(encoding="utf-8").splitlines()
    entry = json.loads(line)
    assert entry["sqlstate"] == "23514"  # check_violation
    assert "llama_job_status_check" in entry["reason"]
    assert (entry["job"]["job_id"], entry["job"]["status"]) == ("job-bad", "running")
    assert "event" not in entry


# --- an unmigrated schema ------------------------------------------------------------------------


def test_on_a_schema_without_llama_job_every_row_waits_on_disk_until_migrate(
    dsn: str,
    schema_name: str,
    pool: ConnectionPool[Any] | None,
    writers: list[Writer],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At 0005 (no llama_job, no NOTED) nothing is dead-lettered: NOTED events and job
    records wait on disk with their batch-mates, one warning names `llamalog migrate`,
    and once the schema is migrated they are all written, once."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, schema=schema_name, target="0005")
    spill = tmp_path / "spill"
    with caplog.at_level(logging.WARNING, logger="llamalogger"):
        writer = writer_for(writers, dsn, schema_name, pool, spill_dir=spill, flush_interval=0.05)
        for number in range(20):
            put_event(writer, number, "NOTED" if number % 5 == 0 else "CREATED")
        put_job(writer, "job-1")
        put_job(writer, "job-2", "failed", error=("OSError", "disk full"))
        assert writer.flush(timeout=10)
        stats = writer.stats()
        assert (stats["on_disk"], stats["written"], stats["rejected"]) == (22, 0, 0)
        assert_adds_up(stats)
        assert any(spill.glob("*.jsonl"))
        warnings = [r.getMessage() for r in caplog.records if "llamalog migrate" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "llama_job" in warnings[0]

        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn, schema=schema_name)
        assert wait_until(lambda: writer.stats()["written"] == 22)
    stats = writer.stats()
    assert (stats["on_disk"], stats["rejected"], stats["replayed"], stats["jobs"]) == (0, 0, 22, 2)
    assert_adds_up(stats)
    stored = rows(dsn, schema_name)
    assert [row["entity_id"] for row in stored] == [str(n) for n in range(20)]
    assert sum(row["category"] == "NOTED" for row in stored) == 4
    assert [row["job_id"] for row in job_rows(dsn, schema_name)] == ["job-1", "job-2"]
    assert not any(spill.glob("*.jsonl*"))


# --- outage, spill and replay ------------------------------------------------------------


def test_job_records_of_an_outage_are_spilled_and_replayed_exactly_once(
    restartable_server: RestartableServer, writers: list[Writer], tmp_path: Path
) -> None:
    server = restartable_server
    spill = tmp_path / "spill"
    writer = writer_for(writers, server.dsn, server.schema, spill_dir=spill, flush_interval=0.05)
    put_event(writer, 0)
    put_job(writer, "before")
    assert writer.flush(timeout=10)
    server.stop_server()
    for number in range(1, 200):
        put_event(writer, number)
        if number % 20 == 0:
            put_job(writer, f"during-{number}", details={"n": number})
    assert writer.flush(timeout=10)
    stats = writer.stats()
    assert stats["on_disk"] == 199 + 9
    assert_adds_up(stats)
    server.start_server()
    put_job(writer, "after")
    assert wait_until(lambda: writer.stats()["on_disk"] == 0)
    assert writer.close(timeout=10)
    stats = writer.stats()
    assert (stats["written"], stats["jobs"], stats["rejected"], stats["dropped"]) == (211, 11, 0, 0)
    assert stats["replayed"] >= 208
    assert_adds_up(stats)
    assert [row["entity_id"] for row in rows(server.dsn, server.schema)] == [
        str(n) for n in range(200)
    ]
    stored = job_rows(server.dsn, server.schema)
    assert [row["job_id"] for row in stored] == [
        "before",
        *(f"during-{n}" for n in range(20, 200, 20)),
        "after",
    ]
    assert [row["details"] for row in stored[1:-1]] == [{"n": n} for n in range(20, 200, 20)]


# --- the counters ------------------------------------------------------------------------


def test_the_identity_holds_at_every_moment_with_job_records_and_a_lost_connection(
    dsn: str, schema: str, writers: list[Writer], tmp_path: Path
) -> None:
    """Four threads log events and job records while the writer's session is terminated
    twice; every snapshot adds up, and in the end every record is written once."""
    application = f"llamalog-jobs-{schema}"
    writer = writer_for(
        writers,
        make_conninfo(dsn, application_name=application),
        schema,
        spill_dir=tmp_path / "spill",
        flush_interval=0.01,
        batch_size=50,
    )
    done = threading.Event()
    broken: list[dict[str, int]] = []

    def watch() -> None:
        while not done.is_set():
            stats = writer.stats()
            if stats["enqueued"] != sum(
                stats[part] for part in ("written", "rejected", "dropped", "on_disk", "queued")
            ):
                broken.append(stats)
            time.sleep(0.001)

    def work(thread: int) -> None:
        for number in range(300):
            put_event(writer, thread * 1000 + number)
            if number % 20 == 19:
                put_job(writer, f"job-{thread}-{number}")

    def terminate() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                [application],
            )

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in workers:
        thread.start()
    for _ in range(2):
        time.sleep(0.05)
        terminate()
    for thread in workers:
        thread.join()
    assert writer.flush(timeout=30)
    assert wait_until(lambda: writer.stats()["on_disk"] == 0)
    done.set()
    watcher.join()
    assert broken == []
    stats = writer.stats()
    assert (stats["enqueued"], stats["jobs"], stats["written"]) == (1260, 60, 1260)
    assert_adds_up(stats)
    with psycopg.connect(dsn) as conn:
        counts = conn.execute(
            sql.SQL(
                "SELECT (SELECT count(DISTINCT entity_id) FROM {s}.llama_log),"
                " (SELECT count(*) FROM {s}.llama_log),"
                " (SELECT count(DISTINCT job_id) FROM {s}.llama_job),"
                " (SELECT count(*) FROM {s}.llama_job)"
            ).format(s=sql.Identifier(schema))
        ).fetchone()
    # Direct writes are at least once (design.md §5.5): a COPY whose acknowledgement was
    # lost with the terminated session may be written twice; nothing is missing.
    assert counts is not None
    assert counts[0] == 1200
    assert counts[2] == 60
