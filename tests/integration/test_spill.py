"""Spill files: events outlive an outage on local disk and are written once, in order."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import psycopg.errors
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from fixtures.database import count_rows, rows
from fixtures.waiting import wait_until
from llamalogger import LlamaLogger
from llamalogger._pipeline.sink import BatchSink

if TYPE_CHECKING:  # fixtures' types only
    from fixtures.restartable import RestartableServer


def stored(server: RestartableServer) -> list[tuple[str, str]]:
    """(entity_id, message) of every row, in insert order."""
    return [(row["entity_id"], row["message"]) for row in rows(server.dsn, server.schema)]


def test_outage_is_spilled_then_replayed_in_order_exactly_once(
    restartable_server: RestartableServer, tmp_path: Path
) -> None:
    server = restartable_server
    spill = tmp_path / "spill"
    with LlamaLogger(
        server.dsn, schema=server.schema, spill_dir=spill, flush_interval=0.05
    ) as logger:
        for number in range(100):
            logger.created(("track", number))
        assert logger.flush(timeout=10)
        server.stop_server()
        for number in range(100, 400):
            logger.created(("track", number))
        # Events on disk count as delivered for flush(): they survive the process.
        assert logger.flush(timeout=10)
        assert logger.stats()["on_disk"] == 300
        assert len(list(spill.glob("*.jsonl"))) >= 1
        server.start_server()
        for number in range(400, 450):
            logger.created(("track", number))
        assert logger.flush(timeout=30)
    stats = logger.stats()  # after close(): the spill files are replayed
    assert [entity for entity, _ in stored(server)] == [str(n) for n in range(450)]
    assert stats["written"] == 450
    # Events logged after the restart, before the replay, join the spill files: order first.
    assert 300 <= stats["spilled"] == stats["replayed"] <= 350
    assert stats["on_disk"] == stats["queued"] == stats["dropped"] == 0
    assert stats["retried"] >= 1
    assert list(spill.iterdir()) == []


CHILD = """
import os, signal, sys, time
from llamalogger import LlamaLogger
from llamalogger._records import JOB, PG_EPOCH_US
logger = LlamaLogger(sys.argv[1], schema=sys.argv[2], spill_dir=sys.argv[3], flush_interval=0.05)
with logger.job("import-during-outage"):
    for number in range(500):
        logger.created(("track", number), f"event {number}")
        if number % 20 == 19:  # a job record by hand, queued as the facade queues one
            now = time.time_ns() // 1000 - PG_EPOCH_US
            logger._put((now, JOB, "succeeded", None, f"job-{number}", "root", "root",
                         "enrich-track", "track", str(number), None, now - 1000, 1,
                         os.getpid(), "worker-1"), {"n": number})
expected = logger.stats()["enqueued"]
deadline = time.monotonic() + 30
while logger.stats()["spilled"] < expected and time.monotonic() < deadline:
    time.sleep(0.02)
print(logger.stats()["spilled"], logger.stats()["jobs"], flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit: only the spill files remain
"""


def job_ids(server: RestartableServer) -> list[str]:
    with psycopg.connect(server.dsn) as conn:
        query = sql.SQL("SELECT job_id FROM {}.llama_job ORDER BY id").format(
            sql.Identifier(server.schema)
        )
        return [str(job_id) for (job_id,) in conn.execute(query)]


def test_spill_files_of_a_killed_process_are_replayed_at_the_next_start(
    restartable_server: RestartableServer, tmp_path: Path
) -> None:
    server = restartable_server
    spill = tmp_path / "spill"
    server.stop_server()
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), server.dsn, server.schema, str(spill)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    # Job records travel in the same files as events (the facade may add its own job's).
    spilled, jobs = map(int, child.stdout.split())
    assert jobs >= 25
    assert spilled == 500 + jobs
    files = sorted(spill.glob("*.jsonl"))
    assert files
    # A file with both kinds of row: its replay must be exactly once for both tables.
    mixed = next(file for file in files if '"JOB"' in file.read_text(encoding="utf-8"))
    keep = tmp_path / "copy-of-a-mixed-file"
    shutil.copy(mixed, keep)

    server.start_server()
    with LlamaLogger(server.dsn, schema=server.schema, spill_dir=spill) as logger:
        assert wait_until(lambda: logger.stats()["replayed"] == spilled)
        assert logger.flush(timeout=10)
    written = stored(server)
    assert written == [(str(n), f"event {n}") for n in range(500)]
    written_jobs = job_ids(server)
    assert [job for job in written_jobs if job.startswith("job-")] == [
        f"job-{n}" for n in range(19, 500, 20)
    ]
    assert len(written_jobs) == jobs

    # The process dies after a replay committed but before its file was deleted: the
    # file is found again, and recognised as written.
    shutil.copy(keep, mixed)
    with LlamaLogger(server.dsn, schema=server.schema, spill_dir=spill) as logger:
        # A file is claimed (renamed) before its replay and deleted after it.
        assert wait_until(lambda: not any(spill.iterdir()))
        assert logger.stats()["replayed"] == 0
    assert stored(server) == written
    assert job_ids(server) == written_jobs


@pytest.mark.timing
def test_close_during_an_outage_spills_what_is_queued(
    restartable_server: RestartableServer, tmp_path: Path
) -> None:
    server = restartable_server
    spill = tmp_path / "spill"
    logger = LlamaLogger(server.dsn, schema=server.schema, spill_dir=spill, flush_interval=60)
    server.stop_server()
    for number in range(250):
        logger.created(("track", number))
    started = time.monotonic()
    assert logger.close(timeout=1.0)  # nothing lost: it is all on disk
    assert time.monotonic() - started < 5
    stats = logger.stats()
    assert (stats["spilled"], stats["dropped"], stats["written"]) == (250, 0, 0)
    server.start_server()
    with LlamaLogger(server.dsn, schema=server.schema, spill_dir=spill) as replayer:
        assert wait_until(lambda: replayer.stats()["replayed"] == 250)
    assert len(stored(server)) == 250
    assert not any(spill.glob("*.jsonl"))
    assert os.listdir(spill) == []


def replay_marks(dsn: str, schema: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT spill_id FROM {}.llama_log_spill_replays").format(
            sql.Identifier(schema)
        )
        return [str(spill_id) for (spill_id,) in conn.execute(query)]


@pytest.mark.parametrize("pool_kind", ["own, autocommit", "borrowed, transactional"])
def test_a_replay_writes_its_rows_and_its_mark_together_or_not_at_all(
    dsn: str, schema: str, pool_kind: str
) -> None:
    # The writer's own pool is in autocommit, so the mark and the COPY need a transaction
    # of their own: a refused row must take the mark back with it, or the file would be
    # taken as written when it was not. A pool passed in may be in either mode.
    good = (0, "CREATED", "info", "ok", None, None, None, None, "track", "1", None, None, None)
    bad = (0, "NOT-A-CATEGORY", *good[2:])
    borrowed = (
        ConnectionPool(dsn, min_size=1, max_size=1, open=True)
        if pool_kind.startswith("b")
        else None
    )
    sink = (
        BatchSink(conninfo=dsn, schema=schema)
        if borrowed is None
        else BatchSink(pool=borrowed, schema=schema)
    )
    try:
        with pytest.raises(psycopg.errors.DataError):
            sink.write_replays([("refused-file", [good, bad])])
        assert replay_marks(dsn, schema) == []
        assert sink.write_replays([("accepted-file", [good])]) == set()
        assert sink.write_replays([("accepted-file", [good])]) == {"accepted-file"}  # replayed
    finally:
        sink.close()
        if borrowed is not None:
            borrowed.close()
    assert replay_marks(dsn, schema) == ["accepted-file"]
    assert count_rows(dsn, schema) == 1
