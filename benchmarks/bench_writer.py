"""Writer benchmarks, measured side by side in one run.

    python benchmarks/bench_writer.py [--dsn DSN] [--events 200000]

1. Caller cost: seconds per ``logger.linked(...)`` inside a job, against stdlib
   ``logging`` into a ``QueueHandler`` (the usual "don't block the worker" set-up), with
   the writer running (the figure that counts) and with the writer idle (the call alone).
2. End to end: events/s from the first log call until ``flush()`` returns, against a
   raw binary COPY of equivalent rows in batches of 5,000 into an identical table, and
   against one INSERT + commit per event (on a sample). Every run starts from an emptied
   table (TRUNCATE and CHECKPOINT); ours and the raw COPY alternate.

Without --dsn / LLAMALOG_DSN it starts the embedded PostgreSQL. Prints measured numbers
only; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import inspect
import logging
import logging.handlers
import queue
import statistics
import time
import uuid
from collections.abc import Callable

import psycopg
from _support import scratch_schema
from psycopg import sql

from llamalogger import LlamaLogger


def llamalogger_call_cost(dsn: str, schema: str, events: int, *, writer_idle: bool) -> float:
    """Seconds per ``linked()`` call inside a job.

    With ``writer_idle`` the writer sleeps until the end (a queue as big as the run and a
    long flush interval): the caller's own cost. Otherwise it writes as it would in
    production, and its share of the GIL shows up in the caller's time.
    """
    options = {"flush_interval": 3600, "batch_size": events + 1} if writer_idle else {}
    with LlamaLogger(dsn, schema=schema, queue_size=events + 1, **options) as logger:
        with logger.job("bench"):
            started = time.perf_counter()
            for number in range(events):
                logger.linked(("artist", 7), ("track", number), "artist linked to track")
            cost = (time.perf_counter() - started) / events
        logger.flush(timeout=300)
    return cost


def stdlib_call_cost(events: int) -> float:
    """Seconds per stdlib ``logging`` call into a ``QueueHandler`` drained by a listener."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    std = logging.getLogger("bench.stdlib")
    std.propagate = False
    std.setLevel(logging.INFO)
    handler = logging.handlers.QueueHandler(records)
    std.addHandler(handler)
    listener = logging.handlers.QueueListener(records, logging.NullHandler())
    listener.start()
    try:
        started = time.perf_counter()
        for number in range(events):
            std.info("artist %s linked to track %s", 7, number)
        return (time.perf_counter() - started) / events
    finally:
        listener.stop()
        std.removeHandler(handler)


def end_to_end(dsn: str, schema: str, events: int) -> float:
    with LlamaLogger(dsn, schema=schema, queue_size=events + 1) as logger:
        started = time.perf_counter()
        with logger.job("bench-e2e"):
            for number in range(events):
                logger.linked(("artist", 7), ("track", number), "artist linked to track")
        assert logger.flush(timeout=600)
        return events / (time.perf_counter() - started)


COLUMNS = sql.SQL(
    "(logged_at, category, level, message, job_id, parent_job_id, root_job_id, job_name,"
    " entity_type, entity_id, related_type, related_id, details)"
)


def equivalent_rows(events: int) -> list[tuple[object, ...]]:
    """The rows the logger writes in end_to_end(), for the baselines to write the same."""
    job = str(uuid.uuid4())
    return [
        (dt.datetime.now(dt.UTC), "LINKED", "info", "artist linked to track", job, None, job,
         "bench-raw", "artist", "7", "track", str(n), None)
        for n in range(events)
    ]  # fmt: skip


def raw_copy(dsn: str, table: sql.Composed, events: int, batch: int = 5000) -> float:
    rows = equivalent_rows(events)
    columns = COLUMNS
    types = ["timestamptz", "text", "text", "text", "varchar", "varchar", "varchar", "text",
             "text", "text", "text", "text", "jsonb"]  # fmt: skip
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        for offset in range(0, events, batch):
            with (
                conn.cursor() as cur,
                cur.copy(
                    sql.SQL("COPY {} {} FROM STDIN (FORMAT BINARY)").format(table, columns)
                ) as copy,
            ):
                copy.set_types(types)
                for row in rows[offset : offset + batch]:
                    copy.write_row(row)
            conn.commit()
    return events / (time.perf_counter() - started)


def insert_per_event(dsn: str, schema: str, events: int) -> float:
    query = sql.SQL(
        "INSERT INTO {schema}.llama_log {columns} VALUES"
        " (%s, %s::{schema}.llama_log_category, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    ).format(schema=sql.Identifier(schema), columns=COLUMNS)
    rows = equivalent_rows(events)
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        for row in rows:
            conn.execute(query, row)
            conn.commit()
    return events / (time.perf_counter() - started)


def fresh_table(dsn: str, table: sql.Composed) -> None:
    """Empty the table and checkpoint, so that every measured run starts from the same state.

    Without this each run writes into a bigger table than the one before, and a checkpoint
    or autovacuum started by one run slows the next: the order of the runs would decide.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(table))
        # A role that may not checkpoint still gets emptied tables and interleaved runs.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with scratch_schema(args.dsn) as (dsn, schema, version):
        table = sql.SQL("{}.llama_log").format(sql.Identifier(schema))
        print(f"PostgreSQL {version}, {args.events} events per run, {args.repeat} runs each, "
              "every run into an emptied table, medians")  # fmt: skip

        def runs(measure: Callable[[], float]) -> list[float]:
            results = []
            for _ in range(args.repeat):
                fresh_table(dsn, table)
                results.append(measure())
            return results

        def spread(values: list[float], scale: float = 1.0, fmt: str = ".2f") -> str:
            return f"(runs {min(values) * scale:{fmt}}-{max(values) * scale:{fmt}})"

        idle = runs(lambda: llamalogger_call_cost(dsn, schema, args.events, writer_idle=True))
        busy = runs(lambda: llamalogger_call_cost(dsn, schema, args.events, writer_idle=False))
        std = runs(lambda: stdlib_call_cost(args.events))
        std_cost = statistics.median(std)
        print(f"caller cost, stdlib logging + QueueHandler: {std_cost * 1e6:.2f} us/call "
              f"{spread(std, 1e6)}")  # fmt: skip
        for label, costs in (("writer running", busy), ("writer idle:   ", idle)):
            cost = statistics.median(costs)
            print(
                f"caller cost, llamalogger linked(), {label} {cost * 1e6:.2f} us/call "
                f"{spread(costs, 1e6)}, ratio {cost / std_cost:.2f}x"
            )
        # Ours and the raw COPY alternate, each into an emptied table; the ratio of each
        # pair is taken, so that a slow spell of the machine hits both sides alike.
        # The target's baseline is COPY in batches of 5,000; COPY in batches as big as the
        # logger's own is shown too, so that the batch size's share is visible.
        own_batch = int(inspect.signature(LlamaLogger).parameters["batch_size"].default)
        ours: list[float] = []
        raw: list[float] = []
        raw_own: list[float] = []
        for _ in range(args.repeat):
            fresh_table(dsn, table)
            ours.append(end_to_end(dsn, schema, args.events))
            fresh_table(dsn, table)
            raw.append(raw_copy(dsn, table, args.events))
            fresh_table(dsn, table)
            raw_own.append(raw_copy(dsn, table, args.events, batch=own_batch))
        ratios = [a / b for a, b in zip(ours, raw, strict=True)]
        ratios_own = [a / b for a, b in zip(ours, raw_own, strict=True)]
        inserts = runs(lambda: insert_per_event(dsn, schema, min(args.events, 5000)))
        ours_rate, raw_rate = statistics.median(ours), statistics.median(raw)
        insert_rate = statistics.median(inserts)
        print(
            f"end to end: llamalogger {ours_rate:,.0f} events/s {spread(ours, 1, ',.0f')}, "
            f"raw binary COPY (5,000/batch) {raw_rate:,.0f} rows/s {spread(raw, 1, ',.0f')}"
        )
        print(
            f"  ratio {statistics.median(ratios):.2f}x (pairs {min(ratios):.2f}-{max(ratios):.2f})"
        )
        print(
            f"raw binary COPY ({own_batch:,}/batch, the logger's batch size) "
            f"{statistics.median(raw_own):,.0f} rows/s {spread(raw_own, 1, ',.0f')}, "
            f"ratio {statistics.median(ratios_own):.2f}x "
            f"(pairs {min(ratios_own):.2f}-{max(ratios_own):.2f})"
        )
        print(
            f"one INSERT + commit per event {insert_rate:,.0f} rows/s "
            f"{spread(inserts, 1, ',.0f')}: llamalogger is {ours_rate / insert_rate:.0f}x that"
        )


if __name__ == "__main__":
    main()
