"""Outages met by several processes: a spill directory shared by two live processes, a
forked child whose job ends while the server is down, and how soon writing resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from fixtures.database import count_rows, run_counts
from fixtures.waiting import wait_until
from llamalogger import LlamaLogger

if TYPE_CHECKING:  # fixtures' types only
    from fixtures.restartable import RestartableServer

WORKER = """
import json, sys, time
from llamalogger import LlamaLogger
dsn, schema, spill, run, events = sys.argv[1:6]
logger = LlamaLogger(dsn, schema=schema, spill_dir=spill, flush_interval=0.05)
started = time.monotonic()
for number in range(int(events)):
    if number == 1000:
        print("logging", flush=True)  # the parent starts the outage now
    logger.created(("track", number), run=run, seq=number)
    if number % 100 == 99:  # about 2,000 events a second
        time.sleep(max(0.0, started + (number + 1) / 2000 - time.monotonic()))
flushed = logger.flush(timeout=30)
closed = logger.close(timeout=30)
print(json.dumps({"flushed": flushed, "closed": closed, **logger.stats()}), flush=True)
"""


def test_two_processes_sharing_a_spill_directory_lose_nothing_through_an_outage(
    restartable_server: RestartableServer, tmp_path: Path
) -> None:
    """Both spill into one directory while the server is down and both replay from it when
    it is back: each claims a file by renaming it, a file the other took is not an error,
    every event is stored exactly once and both writers end healthy."""
    server = restartable_server
    spill = tmp_path / "shared-spill"
    runs = [uuid.uuid4().hex for _ in range(2)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(WORKER),
                server.dsn,
                server.schema,
                str(spill),
                run,
                "10000",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run in runs
    ]
    for worker in workers:  # the outage starts while both are logging
        assert worker.stdout is not None
        assert worker.stdout.readline() == "logging\n", "a worker ended early"
    server.stop_server()
    # The outage lasts until both have put events on disk (a spill id holds its writer's pid).
    both_spilled = wait_until(
        lambda: (
            all(
                any(f"-{worker.pid}-" in path.name for path in spill.iterdir())
                for worker in workers
            )
            if spill.exists()
            else False
        ),
        timeout=30,
    )
    server.start_server()
    assert both_spilled, "the outage did not reach both workers"
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))
    rows = run_counts(server.dsn, server.schema)
    for run, result in zip(runs, results, strict=True):
        assert (result["flushed"], result["closed"]) == (True, True), result
        # on_disk may stay above 0: a file the other process claimed is its to write.
        assert (result["dropped"], result["errors"]) == (0, 0), result
        assert rows[run] == (10_000, 10_000), "lost or duplicated events"
    assert sum(result["spilled"] for result in results) > 0, "the outage was not met"
    assert not [path for path in spill.iterdir() if not path.name.endswith(".partial")]


CHILD_DURING_OUTAGE = """
import json, os, sys, time
from llamalogger import LlamaLogger
dsn, schema, spill = sys.argv[1:4]
logger = LlamaLogger(dsn, schema=schema, spill_dir=spill)
read, write = os.pipe()
with logger.job("parent"):
    pid = os.fork()
    if pid == 0:
        started = time.monotonic()
        with logger.job("task"):
            for number in range(100):
                logger.created(("track", number))
        took = time.monotonic() - started
        os.write(write, json.dumps({"took": took, **logger.stats()}).encode())
        os._exit(0)
    os.waitpid(pid, 0)
print(os.read(read, 65536).decode(), flush=True)
"""


@pytest.mark.timing
@pytest.mark.skipif(sys.platform != "linux", reason="fork is tested on Linux")
def test_a_forked_child_whose_job_ends_during_an_outage_spills_and_returns_at_once(
    restartable_server: RestartableServer, tmp_path: Path
) -> None:
    """The end of the child's outermost job does not wait on the unreachable database:
    its events go to disk, and a logger of the same target writes them later."""
    server = restartable_server
    spill = tmp_path / "spill"
    server.stop_server()
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(CHILD_DURING_OUTAGE),
            server.dsn,
            server.schema,
            str(spill),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(child.stdout)
    assert result["on_disk"] == 101, result  # the events and the job's record
    assert result["took"] < 2.0, result  # a refused connection, then a file: not exit_timeout
    server.start_server()
    with LlamaLogger(server.dsn, schema=server.schema, spill_dir=spill) as logger:
        assert logger.flush(timeout=10)
    with psycopg.connect(server.dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.llama_log WHERE job_name = 'task'").format(
                sql.Identifier(server.schema)
            )
        ).fetchone()
    assert row == (100,)


# Replays are tried 0.05, 0.1, 0.2, 0.4, then 0.5 s apart (docs/reliability.md, outages).
RETRIES_DURING_OUTAGE = 14


@pytest.mark.timing
def test_writing_resumes_soon_after_the_server_accepts_connections_again(
    restartable_server: RestartableServer, tmp_path: Path
) -> None:
    """The writer's own retry schedule (at most 0.5 s apart) decides, not a pool's backoff.
    The bound asserted here is loose; benchmarks/bench_faults.py measures the figure."""
    server = restartable_server
    with LlamaLogger(server.dsn, schema=server.schema, spill_dir=tmp_path / "s") as logger:
        logger.created(("track", "before"))
        assert logger.flush(timeout=10)
        server.stop_server()
        for number in range(1000):
            logger.created(("track", number))
        # The outage lasts until the writer has retried well past its 0.5 s cap (about
        # 5 s), long enough for a pool's 1-2-4 s backoff to have grown past 1 s.
        assert wait_until(lambda: logger.stats()["retried"] >= RETRIES_DURING_OUTAGE, 60)
        server.start_server()
        up = time.monotonic()
        marker = f"after-{os.getpid()}"
        logger.created(("track", marker))
        # Not flush(): the marker must reach the table, not only a spill file.
        written = wait_until(
            lambda: count_rows(server.dsn, server.schema, "entity_id = %s", (marker,)) == 1, 5
        )
        resumed = time.monotonic() - up
        assert written, "writing did not resume"
    print(f"\n[resume] written {resumed:.2f}s after the server accepted connections")
    assert resumed < 2.0
