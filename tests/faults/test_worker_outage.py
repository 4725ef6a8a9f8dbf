"""A Celery worker through a database outage: recycled pool processes lose nothing.

The trap from the task-queue issue: with ``--max-tasks-per-child=1`` every task runs in a
pool process that ends with ``os._exit`` right after it. With the database down, each of
them must put its events on disk quickly (not wait and then lose them); once the database
is back, the spill files are replayed and every event is there, in its job.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workers"))

pytest.importorskip("celery")

import celery_app
import harness
from celery import Celery
from celery.result import AsyncResult

from fixtures.database import rows
from llamalogger import LlamaLogger

TASKS = 6


@pytest.mark.timing
def test_recycled_pool_processes_spill_during_an_outage_and_nothing_is_lost(
    restartable_server: Any, tmp_path: Path
) -> None:
    dsn, schema = restartable_server.dsn, restartable_server.schema
    run = harness.run_id()
    if harness.answers(6379):
        broker = backend = harness.REDIS
    else:
        (tmp_path / "messages").mkdir()
        (tmp_path / "processed").mkdir()
        (tmp_path / "results").mkdir()
        broker, backend = "filesystem://", f"file://{tmp_path / 'results'}"
    spill = tmp_path / "spill"
    app = Celery("publisher", set_as_current=False)
    celery_app.configure(
        app, broker=broker, backend=backend, queue=run, prefix=f"{run}:", folder=str(tmp_path)
    )
    restartable_server.stop_server()
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
            "-P",
            "prefork",
            "-c",
            "2",
            "--max-tasks-per-child=1",
        ],
        {
            "LLAMALOG_DSN": dsn,
            "LLAMALOG_SCHEMA": schema,
            "LLAMALOG_TEST_BROKER": broker,
            "LLAMALOG_TEST_BACKEND": backend,
            "LLAMALOG_TEST_QUEUE": run,
            "LLAMALOG_TEST_PREFIX": f"{run}:",
            "LLAMALOG_TEST_FOLDER": str(tmp_path),
            "LLAMALOG_TEST_LOGGER": "factory",
            "LLAMALOG_TEST_SPILL_DIR": str(spill),
        },
        tmp_path / "worker.log",
    )
    try:
        ids = [app.send_task("celery_app.leaf", ("o", n)).id for n in range(TASKS)]
        started = time.monotonic()
        for task_id in ids:
            AsyncResult(task_id, app=app).get(timeout=120)
        elapsed = time.monotonic() - started
        assert worker.stop() == 0, worker.output()
    finally:
        if worker.process.poll() is None:
            worker.kill()
        restartable_server.start_server()
    # Each recycled process put its events on disk instead of waiting out exit_timeout (10 s).
    assert elapsed < TASKS * 10 / 2, f"{elapsed:.1f} s for {TASKS} tasks on 2 processes"
    assert any(spill.rglob("*")), "the pool processes left spill files"

    with LlamaLogger(dsn, schema=schema, spill_dir=spill) as replayer:
        assert replayer.flush(30)
    stored = [row for row in rows(dsn, schema) if (row["details"] or {}).get("tag") == "o"]
    assert sorted(row["job_id"] for row in stored) == sorted(ids)
    assert all(row["job_id"] == row["details"]["celery_id"] for row in stored)
