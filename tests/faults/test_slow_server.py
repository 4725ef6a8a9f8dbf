"""Slow is not down: a healthy server that takes rows slowly, and a writer starved of CPU.

The slow server is real: a trigger on the test schema's ``llama_log`` sleeps in
``pg_sleep`` for every Nth row, so each ``COPY`` takes longer than half of
``block_timeout`` while the server keeps taking rows. Small queue and batch settings make
a flood fill the queue at once, so that callers wait on the writer all the time: they must
wait at the server's pace (docs/reliability.md, "a slow server"), and no write may be
cancelled as if it hung, spilled or dropped.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from psycopg import sql

from fixtures.database import run_counts
from llamalogger import LlamaLogger

# Small enough for a flood to fill the queue at once; one batch takes the slow server
# 1000 x 1 ms = 1 s at least, twice the 0.5 s that half of the default block_timeout allows.
SETTINGS = {"queue_size": 2000, "batch_size": 1000, "block_timeout": 1.0, "flush_interval": 0.05}
EVENTS = 5000


def slow_down(dsn: str, schema: str, every: int, sleep: float) -> None:
    """Make ``schema``'s ``llama_log`` sleep ``sleep`` seconds for every ``every``-th row
    it takes (a ``BEFORE INSERT`` trigger, so ``COPY`` goes at the trigger's pace)."""
    statements = sql.SQL(
        """
        CREATE SEQUENCE {schema}.slow_rows;
        CREATE FUNCTION {schema}.slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval({sequence}) % {every} = 0 THEN PERFORM pg_sleep({sleep}); END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER slow_row BEFORE INSERT ON {schema}.llama_log
            FOR EACH ROW EXECUTE FUNCTION {schema}.slow_row();
        """
    ).format(
        schema=sql.Identifier(schema),
        sequence=sql.Literal(f"{schema}.slow_rows"),
        every=sql.Literal(every),
        sleep=sql.Literal(sleep),
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statements)


def flood(logger: LlamaLogger, run: str, first: int, count: int) -> None:
    for number in range(first, first + count):
        logger.created(("track", number), run=run, seq=number)


def assert_all_written_once(dsn: str, schema: str, run: str, stats: dict[str, int]) -> None:
    rows, distinct = run_counts(dsn, schema).get(run, (0, 0))
    assert (stats["dropped"], stats["spilled"], stats["retried"]) == (0, 0, 0), stats
    assert distinct == EVENTS, "events were lost"
    assert rows == distinct, "events were stored twice"
    assert stats["written"] == EVENTS


@pytest.mark.timing
def test_a_flood_into_a_slow_server_is_slowed_to_its_pace_and_written(
    dsn: str, schema: str
) -> None:
    """Every batch takes the server longer than half of block_timeout, yet rows move all
    the while: callers wait, nothing is cancelled, spilled or dropped, all stored once."""
    slow_down(dsn, schema, every=1, sleep=0.001)
    run = uuid.uuid4().hex
    with LlamaLogger(dsn, schema=schema, **SETTINGS) as logger:  # type: ignore[arg-type]
        started = time.monotonic()
        flood(logger, run, 0, EVENTS)
        logged = time.monotonic() - started
        assert logger.flush(timeout=60)
        stats = logger.stats()
    assert_all_written_once(dsn, schema, run, stats)
    # Slowed to the server's pace: the last 3000 events could not be queued before the
    # server had taken at least 3000 rows at 1 ms each (queue_size 2000 of 5000).
    assert logged >= (EVENTS - SETTINGS["queue_size"]) * 0.001


def spin(stop: threading.Event) -> None:
    """Keep the interpreter busy, as a CPU-bound task in the same process does."""
    while not stop.is_set():
        sum(range(2000))


@pytest.mark.timing
def test_a_writer_starved_by_busy_threads_still_writes_everything(dsn: str, schema: str) -> None:
    """Three threads of pure Python keep the writer short of the interpreter while four
    callers flood a slow server: the writer is slow, never stuck, so nothing is cancelled,
    spilled or dropped."""
    slow_down(dsn, schema, every=1, sleep=0.001)
    run = uuid.uuid4().hex
    stop = threading.Event()
    busy = [threading.Thread(target=spin, args=(stop,), daemon=True) for _ in range(3)]
    for thread in busy:
        thread.start()
    try:
        with LlamaLogger(dsn, schema=schema, **SETTINGS) as logger:  # type: ignore[arg-type]
            share = EVENTS // 4
            callers = [
                threading.Thread(target=flood, args=(logger, run, n * share, share))
                for n in range(4)
            ]
            for thread in callers:
                thread.start()
            for thread in callers:
                thread.join(120)
            assert logger.flush(timeout=60)
            stats = logger.stats()
    finally:
        stop.set()
        for thread in busy:
            thread.join(5)
    assert_all_written_once(dsn, schema, run, stats)
