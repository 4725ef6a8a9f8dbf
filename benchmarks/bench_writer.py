"""Writer benchmarks on realistic events, measured side by side in one run.

    python benchmarks/bench_writer.py [--dsn DSN] [--events 200000] [--repeat 5]

Realistic events: four kinds in turn, each a message and 2-3 details (a str, a float, an int
or a bool), inside a job of 20 events (``with logger.job(...)``), as an enrichment worker
logs them.

1. Caller cost, in bursts of 1,000 events with a 10 ms pause after each (the worker doing
   I/O), which never fill the queue. The figure that counts, the target's: the wall time
   spent in the calls, per event, with the writer running; it carries the writer's share of
   the GIL, taken while the calls run. The same for stdlib ``logging`` into a
   ``QueueHandler`` drained by a ``QueueListener``, logging the same fields (``extra=``).
   Also shown: the call alone (writer idle); the calling thread's CPU time in the calls,
   which leaves out what other processes on a busy machine took; and the worst case for a
   worker that never releases the GIL between bursts: all CPU time per event, the calling
   thread's in the calls plus all of the background threads' (the writer's or the
   listener's) over the run. And the part of the wall time spent in garbage collections
   that started during a burst (on any thread: a collection holds the GIL), with how many
   of them were full collections.
2. End to end: events/s from the first log call until ``flush()`` returns, against a raw
   binary COPY of the same rows with the details encoded per row (orjson, through psycopg's
   jsonb dumper) in batches of 5,000 and of the logger's own batch size, and against one
   INSERT + commit per event (on a sample; a reference, not a target). Every run starts
   from an emptied table (TRUNCATE and CHECKPOINT); ours and the raw COPYs alternate, and
   each ratio is taken pair by pair.
3. The job table's cost, end to end: the same realistic events with one job record per job
   of 20 (a row of ``llama_job``, written in the transaction of its batch) against the same
   events without job records, alternating, events/s pair by pair (target: at most 5 %
   slower). While ``logger.job()`` writes no job record of its own, the records are built
   by hand when each job ends and queued as the facade queues them; once it does, the
   records are its own and the run without them enters its jobs without a job scope.

3. With --structlog, only this instead: the structlog processor's own cost per event
   (``PersistToLlamaLog``: a chain with it minus the same chain without it) against a direct
   ``logger.log()`` of the same fields; see structlog_section().

Without --dsn / LLAMALOG_DSN it starts the embedded PostgreSQL. Prints measured numbers
only; nothing here is asserted. Figures are medians of the runs, with the range.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import inspect
import logging
import logging.handlers
import os
import queue
import shlex
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import orjson
import psycopg
from _support import scratch_schema
from psycopg import sql
from psycopg.types.json import set_json_dumps

from llamalogger import Category, JobContext, LlamaLogger
from llamalogger._conninfo import masked_conninfo
from llamalogger._context import _current, new_job_id
from llamalogger._records import JOB, PG_EPOCH_US

JOB_SIZE = 20
BURST = 1000
PAUSE = 0.01


# --- the events ------------------------------------------------------------------------------


def log_events(logger: LlamaLogger, first: int, count: int, *, in_job: bool = True) -> None:
    """``count`` realistic events, numbered from ``first``, a job per 20 events (none with
    ``in_job=False``: the caller's job)."""
    log, linked = logger.log, logger.linked
    job = logger.job if in_job else lambda _name: contextlib.nullcontext()
    for start in range(first, first + count, JOB_SIZE):
        with job("enrich-track"):
            for n in range(start, min(start + JOB_SIZE, first + count)):
                kind = n % 4
                if kind == 0:
                    log(Category.ENRICHED, "track enriched", entity=("track", n),
                        source="musicbrainz", score=0.93)  # fmt: skip
                elif kind == 1:
                    log(Category.MATCHED, "recording matched", entity=("recording", n),
                        candidates=3, best="mb-4f2a", score=0.87)  # fmt: skip
                elif kind == 2:
                    linked(("artist", 7), ("track", n), "artist linked to track",
                           role="primary", position=n % 12)  # fmt: skip
                else:
                    log(Category.SKIPPED, "track skipped", entity=("track", n),
                        reason="duplicate", seen_before=True)  # fmt: skip


def stdlib_events(std: logging.Logger, job_id: str, first: int, count: int) -> None:
    """The same events through stdlib logging: the same fields, as ``extra``."""
    info = std.info
    for n in range(first, first + count):
        kind = n % 4
        if kind == 0:
            info("track enriched", extra={"category": "ENRICHED", "entity": ("track", n),
                 "job_id": job_id, "source": "musicbrainz", "score": 0.93})  # fmt: skip
        elif kind == 1:
            info("recording matched", extra={"category": "MATCHED", "entity": ("recording", n),
                 "job_id": job_id, "candidates": 3, "best": "mb-4f2a", "score": 0.87})  # fmt: skip
        elif kind == 2:
            info("artist linked to track", extra={"category": "LINKED", "entity": ("artist", 7),
                 "related": ("track", n), "job_id": job_id, "role": "primary",
                 "position": n % 12})  # fmt: skip
        else:
            info("track skipped", extra={"category": "SKIPPED", "entity": ("track", n),
                 "job_id": job_id, "reason": "duplicate", "seen_before": True})  # fmt: skip


def equivalent_rows(events: int) -> list[tuple[object, ...]]:
    """The rows the logger writes for log_events(0, events), for the baselines to write."""
    rows: list[tuple[object, ...]] = []
    now = dt.datetime.now(dt.UTC)
    job = str(uuid.uuid4())
    for n in range(events):
        if n % JOB_SIZE == 0:
            job = str(uuid.uuid4())
        kind = n % 4
        if kind == 0:
            event = ("ENRICHED", "track enriched", "track", str(n), None, None,
                     {"source": "musicbrainz", "score": 0.93})  # fmt: skip
        elif kind == 1:
            event = ("MATCHED", "recording matched", "recording", str(n), None, None,
                     {"candidates": 3, "best": "mb-4f2a", "score": 0.87})  # fmt: skip
        elif kind == 2:
            event = ("LINKED", "artist linked to track", "artist", "7", "track", str(n),
                     {"role": "primary", "position": n % 12})  # fmt: skip
        else:
            event = ("SKIPPED", "track skipped", "track", str(n), None, None,
                     {"reason": "duplicate", "seen_before": True})  # fmt: skip
        category, message, entity_type, entity_id, related_type, related_id, details = event
        rows.append((now, category, "info", message, job, None, job, "enrich-track",
                     entity_type, entity_id, related_type, related_id, details))  # fmt: skip
    return rows


# --- caller cost -----------------------------------------------------------------------------


def cpu_seconds(threads: Iterable[threading.Thread]) -> float:
    """CPU time the live ``threads`` have used so far."""
    total = 0.0
    for thread in threads:
        if thread.ident is not None and thread.is_alive():
            with contextlib.suppress(OSError):
                total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return total


@attrs.frozen
class Cost:
    """Seconds per event: wall time in the calls, the calling thread's CPU time in them,
    and that plus the background threads' CPU time; the garbage collector's seconds per
    event in collections that started during a burst (on any thread: a collection holds
    the GIL, so the calls wait for it), and its full collections in those bursts."""

    wall: float
    calls_cpu: float
    cpu: float
    gc: float
    full_collections: int


class GcWatch:
    """Time spent in garbage collections that start while ``bursting`` is set."""

    def __init__(self) -> None:
        self.bursting = False
        self.seconds = 0.0
        self.full_collections = 0
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter() if self.bursting else None
        elif self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self.full_collections += info["generation"] == 2
            self._started = None

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def in_bursts(
    events: int, burst: Callable[[int, int], None], watch: GcWatch
) -> tuple[float, float]:
    """Wall seconds and calling-thread CPU seconds spent in ``burst(first, count)``."""
    wall = cpu = 0.0
    for first in range(0, events, BURST):
        started, started_cpu = time.perf_counter(), time.thread_time()
        watch.bursting = True
        burst(first, min(BURST, events - first))
        watch.bursting = False
        wall += time.perf_counter() - started
        cpu += time.thread_time() - started_cpu
        time.sleep(PAUSE)  # the worker's I/O: the background thread gets the GIL
    return wall, cpu


def llamalogger_cost(dsn: str, schema: str, events: int, *, writer_idle: bool) -> Cost:
    """Per event: the calls' wall time, and their CPU plus the logger's threads' CPU time."""
    options = {"flush_interval": 3600, "batch_size": events + 1} if writer_idle else {}
    before = set(threading.enumerate())
    with LlamaLogger(dsn, schema=schema, queue_size=events + 1, **options) as logger:
        logger.log(Category.CREATED, "warm-up")  # starts the writer and its connection
        if not writer_idle:
            assert logger.flush(timeout=30)
        threads = [thread for thread in threading.enumerate() if thread not in before]
        background = cpu_seconds(threads)
        with GcWatch() as watch:
            wall, cpu = in_bursts(
                events, lambda first, count: log_events(logger, first, count), watch
            )
        assert logger.flush(timeout=300)
        background = cpu_seconds(threads) - background
        assert logger.stats()["dropped"] == 0
    return Cost(
        wall / events,
        cpu / events,
        (cpu + (0 if writer_idle else background)) / events,
        watch.seconds / events,
        watch.full_collections,
    )


def stdlib_cost(events: int) -> Cost:
    """Per event for stdlib logging into a QueueHandler, measured as llamalogger_cost."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    std = logging.getLogger("bench.stdlib")
    std.propagate = False
    std.setLevel(logging.INFO)
    handler = logging.handlers.QueueHandler(records)
    std.addHandler(handler)
    listener = logging.handlers.QueueListener(records, logging.NullHandler())
    listener.start()
    try:
        thread = listener._thread  # type: ignore[attr-defined]
        background = cpu_seconds([thread])
        job_id = str(uuid.uuid4())
        with GcWatch() as watch:
            wall, cpu = in_bursts(
                events, lambda first, count: stdlib_events(std, job_id, first, count), watch
            )
        while not records.empty():  # what the listener still has to take counts too
            time.sleep(0.001)
        background = cpu_seconds([thread]) - background
        return Cost(
            wall / events,
            cpu / events,
            (cpu + background) / events,
            watch.seconds / events,
            watch.full_collections,
        )
    finally:
        listener.stop()
        std.removeHandler(handler)


# --- end to end ------------------------------------------------------------------------------


def end_to_end(dsn: str, schema: str, events: int) -> float:
    with LlamaLogger(dsn, schema=schema, queue_size=events + 1) as logger:
        started = time.perf_counter()
        log_events(logger, 0, events)
        assert logger.flush(timeout=600)
        rate = events / (time.perf_counter() - started)
        assert logger.stats()["sanitised"] == 0
        return rate


COLUMNS = sql.SQL(
    "(logged_at, category, level, message, job_id, parent_job_id, root_job_id, job_name,"
    " entity_type, entity_id, related_type, related_id, details)"
)


def raw_copy(dsn: str, table: sql.Composed, events: int, batch: int = 5000) -> float:
    """Rows/s of a binary COPY of the same rows; the details dict of each row is encoded
    by psycopg's jsonb dumper, set to orjson, while the row is written."""
    rows = equivalent_rows(events)
    types = ["timestamptz", "text", "text", "text", "varchar", "varchar", "varchar", "text",
             "text", "text", "text", "text", "jsonb"]  # fmt: skip
    statement = sql.SQL("COPY {} {} FROM STDIN (FORMAT BINARY)").format(table, COLUMNS)
    with psycopg.connect(dsn) as conn:
        set_json_dumps(orjson.dumps, context=conn)
        started = time.perf_counter()
        for offset in range(0, events, batch):
            with conn.cursor() as cur, cur.copy(statement) as copy:
                copy.set_types(types)
                for row in rows[offset : offset + batch]:
                    copy.write_row(row)
            conn.commit()
        return events / (time.perf_counter() - started)


# --- the job table's cost ----------------------------------------------------------------------


@contextlib.contextmanager
def bare_job(name: str) -> Iterator[JobContext]:
    """A job context without a job scope, so without a job record: the run without them
    once ``logger.job()`` writes its own (the facade's work in progress)."""
    context = JobContext(new_job_id(), name)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def facade_writes_job_records(dsn: str, schema: str) -> bool:
    with LlamaLogger(dsn, schema=schema) as logger:
        with logger.job("probe"):
            pass
        assert logger.flush(timeout=30)
        return logger.stats().get("jobs", 0) > 0


def log_jobs(
    logger: LlamaLogger,
    events: int,
    enter: Callable[[str], contextlib.AbstractContextManager[JobContext]],
    *,
    by_hand: bool,
) -> None:
    """``log_events`` one job of 20 at a time in jobs entered by ``enter``; ``by_hand``: a
    job record for each, as the facade queues one when a job ends."""
    put, pid, host = logger._put, os.getpid(), "bench-host"
    for first in range(0, events, JOB_SIZE):
        started = time.time_ns() // 1000 - PG_EPOCH_US
        with enter("enrich-track") as job:
            log_events(logger, first, min(JOB_SIZE, events - first), in_job=False)
        if by_hand:
            ended = time.time_ns() // 1000 - PG_EPOCH_US
            put((ended, JOB, "succeeded", None, job.job_id, job.parent_job_id, job.root_job_id,
                 job.name, "track", str(first), None, started, 1, pid, host), None)  # fmt: skip


def jobs_end_to_end(
    dsn: str, schema: str, events: int, *, job_records: bool, facade_writes: bool
) -> float:
    """Events/s from the first call until ``flush()`` returns, with or without job records."""
    with LlamaLogger(dsn, schema=schema, queue_size=2 * events) as logger:
        enter = logger.job if job_records or not facade_writes else bare_job
        started = time.perf_counter()
        log_jobs(logger, events, enter, by_hand=job_records and not facade_writes)
        assert logger.flush(timeout=600)
        rate = events / (time.perf_counter() - started)
        stats = logger.stats()
    jobs = -(-events // JOB_SIZE) if job_records else 0
    assert (stats["sanitised"], stats["rejected"], stats["jobs"]) == (0, 0, jobs), stats
    return rate


def insert_per_event(dsn: str, schema: str, events: int) -> float:
    query = sql.SQL(
        "INSERT INTO {schema}.llama_log {columns} VALUES"
        " (%s, %s::{schema}.llama_log_category, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    ).format(schema=sql.Identifier(schema), columns=COLUMNS)
    rows = [(*row[:12], psycopg.types.json.Jsonb(row[12])) for row in equivalent_rows(events)]
    with psycopg.connect(dsn) as conn:
        set_json_dumps(orjson.dumps, context=conn)
        started = time.perf_counter()
        for row in rows:
            conn.execute(query, row)
            conn.commit()
        return events / (time.perf_counter() - started)


def fresh_table(dsn: str, table: sql.Composable) -> None:
    """Empty the table and checkpoint, so that every measured run starts from the same state.

    Without this each run writes into a bigger table than the one before, and a checkpoint
    or autovacuum started by one run slows the next: the order of the runs would decide.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(table))
        # A role that may not checkpoint still gets emptied tables and interleaved runs.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")


# --- structlog: the processor's own cost against a direct call ----------------------------


def direct_events(logger: LlamaLogger, first: int, count: int) -> None:
    """``count`` events through ``logger.log()``, with the fields of structlog_events."""
    log = logger.log
    for n in range(first, first + count):
        kind = n % 4
        if kind == 0:
            log(Category.ENRICHED, "track enriched", entity=("track", n),
                source="musicbrainz", score=0.93)  # fmt: skip
        elif kind == 1:
            log(Category.MATCHED, "recording matched", entity=("recording", n),
                candidates=3, best="mb-4f2a", score=0.87)  # fmt: skip
        elif kind == 2:
            log(Category.LINKED, "artist linked to track", entity=("artist", 7),
                related=("track", n), role="primary", position=n % 12)  # fmt: skip
        else:
            log(Category.SKIPPED, "track skipped", entity=("track", n),
                reason="duplicate", seen_before=True)  # fmt: skip


def structlog_events(log: Any, first: int, count: int) -> None:
    """The same events through a structlog logger, with the same fields as keywords."""
    info = log.info
    for n in range(first, first + count):
        kind = n % 4
        if kind == 0:
            info("track enriched", category=Category.ENRICHED, entity=("track", n),
                 source="musicbrainz", score=0.93)  # fmt: skip
        elif kind == 1:
            info("recording matched", category=Category.MATCHED, entity=("recording", n),
                 candidates=3, best="mb-4f2a", score=0.87)  # fmt: skip
        elif kind == 2:
            info("artist linked to track", category=Category.LINKED, entity=("artist", 7),
                 related=("track", n), role="primary", position=n % 12)  # fmt: skip
        else:
            info("track skipped", category=Category.SKIPPED, entity=("track", n),
                 reason="duplicate", seen_before=True)  # fmt: skip


def structlog_and_direct_events(log: Any, logger: LlamaLogger, first: int, count: int) -> None:
    """Each event through ``log`` (a chain without the processor) and then ``logger.log()``:
    the direct call made between structlog calls, as a worker that uses both makes it."""
    info, log_direct = log.info, logger.log
    for n in range(first, first + count):
        kind = n % 4
        if kind == 0:
            info("track enriched", category=Category.ENRICHED, entity=("track", n),
                 source="musicbrainz", score=0.93)  # fmt: skip
            log_direct(Category.ENRICHED, "track enriched", entity=("track", n),
                       source="musicbrainz", score=0.93)  # fmt: skip
        elif kind == 1:
            info("recording matched", category=Category.MATCHED, entity=("recording", n),
                 candidates=3, best="mb-4f2a", score=0.87)  # fmt: skip
            log_direct(Category.MATCHED, "recording matched", entity=("recording", n),
                       candidates=3, best="mb-4f2a", score=0.87)  # fmt: skip
        elif kind == 2:
            info("artist linked to track", category=Category.LINKED, entity=("artist", 7),
                 related=("track", n), role="primary", position=n % 12)  # fmt: skip
            log_direct(Category.LINKED, "artist linked to track", entity=("artist", 7),
                       related=("track", n), role="primary", position=n % 12)  # fmt: skip
        else:
            info("track skipped", category=Category.SKIPPED, entity=("track", n),
                 reason="duplicate", seen_before=True)  # fmt: skip
            log_direct(Category.SKIPPED, "track skipped", entity=("track", n),
                       reason="duplicate", seen_before=True)  # fmt: skip


def structlog_chain(llama: LlamaLogger | None, *, early: bool = True) -> Any:
    """A bound logger of docs/integrations.md's configuration: PersistToLlamaLog right after
    merge_contextvars (``early``; else before the renderers, where the docs had it) when
    ``llama`` is given, none otherwise. It renders to structlog's ReturnLogger: writing the
    line would add the same I/O to every variant."""
    import structlog

    from llamalogger.integrations.structlog import PersistToLlamaLog, add_job_context

    persist = [] if llama is None else [PersistToLlamaLog(llama)]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *(persist if early else []),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            add_job_context,
            *([] if early else persist),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    log = structlog.get_logger()
    log.info("warm-up")  # structlog builds and caches the bound logger at its first call
    return log


def structlog_costs(
    dsn: str, schema: str, events: int, bound: dict[str, object]
) -> dict[str, tuple[float, float]]:
    """(wall, calling thread's CPU) seconds per event of: the direct calls alone; the chain
    without the processor; that chain followed by a direct call of the same event; the chain
    with the processor (early, and late); in one logger's jobs (a job per burst). The
    variants alternate burst by burst, in a rotating order, so that a slower moment of a
    busy machine falls on all of them alike.

    The writer is idle during the bursts and writes everything between two rounds: its
    work is the same for the direct calls and the processor's rows, and it would only add
    noise; emptying the queue each round keeps memory as a running writer would."""
    import structlog

    room = 5 * BURST + 1  # a round: one burst of each variant that logs
    idle = {"flush_interval": 3600, "batch_size": room}
    with LlamaLogger(dsn, schema=schema, queue_size=room, **idle) as llama:
        llama.log(Category.CREATED, "warm-up")  # starts the writer and its connection
        assert llama.flush(timeout=30)
        chains = {
            "without": structlog_chain(None),
            "with": structlog_chain(llama),
            "with, late": structlog_chain(llama, early=False),
        }
        variants: list[tuple[str, Callable[[int, int], None]]] = [
            ("direct", lambda first, count: direct_events(llama, first, count)),
            (
                "without + direct",
                lambda first, count: structlog_and_direct_events(
                    chains["without"], llama, first, count
                ),
            ),
            *(
                (name, lambda first, count, log=log: structlog_events(log, first, count))
                for name, log in chains.items()
            ),
        ]
        totals = {name: [0.0, 0.0] for name, _ in variants}
        structlog.contextvars.bind_contextvars(**bound)
        try:
            for index, first in enumerate(range(0, events, BURST)):
                count = min(BURST, events - first)
                turn = index % len(variants)
                for name, burst in variants[turn:] + variants[:turn]:
                    with llama.job("enrich-tracks"):
                        started, started_cpu = time.perf_counter(), time.thread_time()
                        burst(first, count)
                        totals[name][0] += time.perf_counter() - started
                        totals[name][1] += time.thread_time() - started_cpu
                assert llama.flush(timeout=300)
        finally:
            structlog.contextvars.clear_contextvars()
            structlog.reset_defaults()
        assert llama.flush(timeout=300)
        assert llama.stats()["dropped"] == 0
    return {name: (wall / events, cpu / events) for name, (wall, cpu) in totals.items()}


def structlog_section(dsn: str, schema: str, events: int, repeat: int) -> None:
    """Print the processor's own cost per event (the chain with it minus the chain without
    it) and its ratio, pair by pair, to a direct ``logger.log()`` of the same fields: made in
    a loop of direct calls alone, and made between the same structlog calls (the chain and
    a direct call, minus the chain), where it runs with the same cold caches as the
    processor; with no structlog contextvars bound and with two bound."""
    print(
        f"structlog, {events} events per run in bursts of {BURST:,} (a job per burst; the "
        f"variants alternate burst by burst), {repeat} runs, medians; the processor's own cost "
        "= the chain with PersistToLlamaLog - the same chain without it"
    )
    for label, bound in (
        ("no contextvars bound", {}),
        (
            "two contextvars bound (request_id, user)",
            {"request_id": "req-1f3a", "user": "importer"},
        ),
    ):
        runs = [structlog_costs(dsn, schema, events, bound) for _ in range(repeat)]
        print(f"  {label}:")
        for index, what in ((1, "calling thread's CPU time"), (0, "wall time in the calls")):
            direct = [run["direct"][index] for run in runs]
            without = [run["without"][index] for run in runs]
            between = [run["without + direct"][index] - run["without"][index] for run in runs]
            print(
                f"    {what}: direct logger.log() in a loop "
                f"{statistics.median(direct) * 1e6:.2f} us "
                f"{spread(direct, 1e6)}, between structlog calls "
                f"{statistics.median(between) * 1e6:.2f} us {spread(between, 1e6)}; the chain "
                f"without the processor {statistics.median(without) * 1e6:.2f} us "
                f"{spread(without, 1e6)}"
            )
            for name, where in (
                ("with", "right after merge_contextvars (documented)"),
                ("with, late", "before the renderers"),
            ):
                with_it = [run[name][index] for run in runs]
                own = [w - wo for w, wo in zip(with_it, without, strict=True)]
                print(
                    f"      processor {where}: own cost {statistics.median(own) * 1e6:.2f} us "
                    f"{spread(own, 1e6)}; "
                    + ratio_line(
                        "to a direct call in a loop",
                        [o / d for o, d in zip(own, direct, strict=True)],
                    )
                    + ", "
                    + ratio_line(
                        "between structlog calls",
                        [o / b for o, b in zip(own, between, strict=True)],
                    )
                    + "; "
                    + ratio_line(
                        "chain with / without",
                        [w / wo for w, wo in zip(with_it, without, strict=True)],
                    )
                )


# --- report ----------------------------------------------------------------------------------


def spread(values: list[float], scale: float = 1.0, fmt: str = ".2f") -> str:
    return f"(runs {min(values) * scale:{fmt}}-{max(values) * scale:{fmt}})"


def ratio_line(label: str, ratios: list[float]) -> str:
    return f"{label} {statistics.median(ratios):.2f}x (pairs {min(ratios):.2f}-{max(ratios):.2f})"


def jobs_section(dsn: str, schema: str, events: int, repeat: int) -> None:
    """The job table's cost: the same events end to end with and without job records."""
    table = sql.SQL("{}.llama_log").format(sql.Identifier(schema))
    facade_writes = facade_writes_job_records(dsn, schema)
    both = sql.SQL("{}, {}.llama_job").format(table, sql.Identifier(schema))
    without_jobs: list[float] = []
    with_jobs: list[float] = []
    for _ in range(repeat):
        for job_records, rates in ((False, without_jobs), (True, with_jobs)):
            fresh_table(dsn, both)
            rates.append(
                jobs_end_to_end(
                    dsn,
                    schema,
                    events,
                    job_records=job_records,
                    facade_writes=facade_writes,
                )
            )
    made_by = "logger.job()" if facade_writes else "built by hand when each job ends"
    print(f"the job table's cost, end to end (job records {made_by}):")
    print(
        f"  without job records {statistics.median(without_jobs):,.0f} events/s "
        f"{spread(without_jobs, 1, ',.0f')}"
    )
    pairs = [a / b for a, b in zip(with_jobs, without_jobs, strict=True)]
    print(
        f"  with a job record per {JOB_SIZE} events {statistics.median(with_jobs):,.0f} "
        f"events/s {spread(with_jobs, 1, ',.0f')}, "
        + ratio_line("ratio", pairs)
        + " (target: at least 0.95x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument(
        "--structlog", action="store_true", help="only the structlog processor's cost"
    )
    parser.add_argument("--jobs", action="store_true", help="only the job table's cost")
    args = parser.parse_args()
    shown = [masked_conninfo(arg) if "=" in arg or "://" in arg else arg for arg in sys.argv[1:]]
    print("command:", shlex.join(["python", "benchmarks/bench_writer.py", *shown]))
    with scratch_schema(args.dsn) as (dsn, schema, version):
        if args.structlog:
            structlog_section(dsn, schema, args.events, args.repeat)
            return
        if args.jobs:
            print(f"PostgreSQL {version}, {args.events} realistic events per run")
            jobs_section(dsn, schema, args.events, args.repeat)
            return
        table = sql.SQL("{}.llama_log").format(sql.Identifier(schema))
        print(
            f"PostgreSQL {version}, {args.events} realistic events per run (message + 2-3 "
            f"details, a job per {JOB_SIZE}), {args.repeat} interleaved runs each, medians"
        )

        # Caller cost: ours (writer running), stdlib and ours (writer idle) in turn.
        busy: list[Cost] = []
        std: list[Cost] = []
        idle: list[Cost] = []
        for _ in range(args.repeat):
            fresh_table(dsn, table)
            busy.append(llamalogger_cost(dsn, schema, args.events, writer_idle=False))
            std.append(stdlib_cost(args.events))
            idle.append(llamalogger_cost(dsn, schema, args.events, writer_idle=True))
        print(f"caller cost per event, in bursts of {BURST:,} with {PAUSE * 1000:.0f} ms pauses:")
        for what, label in (
            ("wall", "wall time in the calls"),
            ("calls_cpu", "calling thread's CPU time in the calls"),
            ("cpu", "all CPU, worst case"),
        ):
            theirs = [getattr(cost, what) for cost in std]
            print(
                f"  {label}: stdlib logging + QueueHandler "
                f"{statistics.median(theirs) * 1e6:.2f} us {spread(theirs, 1e6)}"
            )
            variants = [("writer running", busy)]
            if what != "cpu":
                variants.append(("call alone, writer idle", idle))
            for variant, costs in variants:
                ours = [getattr(cost, what) for cost in costs]
                pairs = [a / b for a, b in zip(ours, theirs, strict=True)]
                print(
                    f"    llamalogger, {variant}: {statistics.median(ours) * 1e6:.2f} us "
                    f"{spread(ours, 1e6)}, " + ratio_line("ratio", pairs)
                )
        print("  of the wall time: garbage collections started during the bursts, per event")
        for label, costs in (
            ("stdlib logging + QueueHandler", std),
            ("llamalogger, writer running", busy),
            ("llamalogger, writer idle", idle),
        ):
            seconds = [cost.gc for cost in costs]
            full = statistics.median([cost.full_collections for cost in costs])
            print(
                f"    {label}: {statistics.median(seconds) * 1e6:.2f} us {spread(seconds, 1e6)}, "
                f"{full:.0f} full collections a run"
            )
        if args.skip_end_to_end:
            return

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
        inserts: list[float] = []
        for _ in range(args.repeat):
            fresh_table(dsn, table)
            inserts.append(insert_per_event(dsn, schema, min(args.events, 5000)))
        ours_rate, insert_rate = statistics.median(ours), statistics.median(inserts)
        print(f"end to end: llamalogger {ours_rate:,.0f} events/s {spread(ours, 1, ',.0f')}")
        for label, rates in (("5,000", raw), (f"{own_batch:,}, the logger's", raw_own)):
            pairs = [a / b for a, b in zip(ours, rates, strict=True)]
            print(
                f"  raw binary COPY, details encoded per row ({label} per batch) "
                f"{statistics.median(rates):,.0f} rows/s {spread(rates, 1, ',.0f')}, "
                + ratio_line("llamalogger", pairs)
            )
        print(
            f"  one INSERT + commit per event (reference) {insert_rate:,.0f} rows/s "
            f"{spread(inserts, 1, ',.0f')}: llamalogger is {ours_rate / insert_rate:.0f}x that"
        )
        jobs_section(dsn, schema, args.events, args.repeat)


if __name__ == "__main__":
    main()
