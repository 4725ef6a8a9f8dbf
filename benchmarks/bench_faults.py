"""Issue #8's table of faults, replayed against a real server: what is lost, how long it takes.

    python benchmarks/bench_faults.py                          # embedded PostgreSQL, all rows
    python benchmarks/bench_faults.py --only outage            # one row
    python benchmarks/bench_faults.py --server machine         # 127.0.0.1:5432, no restart
    python benchmarks/bench_faults.py --server machine --allow-restart   # every row there too
    python benchmarks/bench_faults.py --server machine --dsn DSN --only slow-server   # elsewhere

Each row of the table runs in processes of its own (a crash, a fork or a dead writer thread
must not spoil the next row) against a freshly migrated schema. The table is the ground truth:
every event carries the row's run id and its number in ``details``, so lost = logged - stored
and duplicates = stored - distinct. "Writing resumed" is the time from the backends'
termination, or from the server accepting connections again, to the first new row visible to
a separate session. Loggers use the defaults unless a row names an option; the default spill
directory (where the logger has one) lands in a temporary ``XDG_STATE_HOME`` per row.
"""

from __future__ import annotations

import argparse
import collections.abc
import contextlib
import json
import logging
import multiprocessing
import os
import re
import shlex
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _support import (
    ADMIN_APP,
    MACHINE_DSN,
    CommitWatch,
    Server,
    fault_server,
    migrated_schema,
    stored_rows,
)
from bench_writer import log_events
from psycopg import sql
from psycopg.conninfo import make_conninfo

import llamalogger
from llamalogger import LlamaLogger

SPAWN = multiprocessing.get_context("spawn")
RESUME_TARGET = 1.0
LATER = 5.0  # close-down: how long after close() the counters are read again
_POOL_THREAD = re.compile(
    r"-(scheduler|worker-\d+)$"
)  # issue #8, point 6: writing resumes within 1 s


# --- what runs inside the scenario's processes ------------------------------------------------


class Probe:
    """What a child process observes besides the table: lines on the ``llamalogger`` logger
    and threads that died of an exception."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.deaths: list[str] = []
        probe = self

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                probe.lines.append((record.levelname, record.getMessage()[:160]))

        logging.getLogger("llamalogger").addHandler(Keep())
        # The pool's own connection errors are psycopg's business, not the logger's report.
        logging.getLogger("psycopg").addHandler(logging.NullHandler())
        logging.getLogger("psycopg").propagate = False

        def died(args: threading.ExceptHookArgs) -> None:
            name = args.thread.name if args.thread else "?"
            probe.deaths.append(f"{name}: {args.exc_type.__name__}")

        threading.excepthook = died

    def levels(self, lines: list[tuple[str, str]] | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for level, _ in self.lines if lines is None else lines:
            counts[level] = counts.get(level, 0) + 1
        return counts


def writer_threads() -> list[str]:
    """Live threads of llamalogger's own, not counting its connection pool's (psycopg_pool
    names those ``<pool name>-scheduler`` and ``<pool name>-worker-<n>``)."""
    return sorted(
        t.name
        for t in threading.enumerate()
        if "llamalogger" in t.name.lower() and not _POOL_THREAD.search(t.name)
    )


def paced(log_one: Callable[[int], None], rate: int, seconds: float) -> int:
    """Log ``rate`` events a second for ``seconds``; event n is due at n / rate."""
    total = int(rate * seconds)
    started = time.perf_counter()
    number = 0
    while number < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        while number < due:
            log_one(number)
            number += 1
        time.sleep(0.001)
    return number


def _child_main(target: Callable[..., dict[str, Any]], send: Connection, *args: Any) -> None:
    probe = Probe()
    try:
        result = target(probe, *args)
    except BaseException as exc:  # whatever the scenario raised is part of its report
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result.setdefault("levels", probe.levels())
    result.setdefault("first_lines", probe.lines[:3])
    result["thread_deaths"] = probe.deaths
    send.send(result)
    send.close()
    # No exit hooks: a logger left open must not stall the bench (each scenario closes its
    # own logger when closing is part of what it measures).
    os._exit(0)


class Child:
    """A scenario process (spawned: nothing inherited from the bench) and its report."""

    def __init__(self, target: Callable[..., dict[str, Any]], *args: Any) -> None:
        self._receive, send = SPAWN.Pipe(duplex=False)
        self._process = SPAWN.Process(target=_child_main, args=(target, send, *args))
        self._process.start()
        send.close()

    def report(self, timeout: float) -> dict[str, Any]:
        result: dict[str, Any]
        if self._receive.poll(timeout):
            try:
                result = self._receive.recv()
            except EOFError:
                result = {}
        else:
            result = {}
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        if not result:
            result = {"error": f"no report (exit code {self._process.exitcode})"}
        return result


def child_paced(
    probe: Probe,
    dsn: str,
    schema: str,
    run: str,
    process: str,
    rate: int,
    seconds: float,
    options: dict[str, Any],
    started: Any,
    flush_timeout: float,
) -> dict[str, Any]:
    logger = LlamaLogger(dsn, schema=schema, **options)
    started.set()
    logged = paced(lambda n: logger.created(("track", n), run=run, p=process, n=n), rate, seconds)
    begun = time.monotonic()
    flushed = logger.flush(flush_timeout)
    flush_seconds = time.monotonic() - begun
    alive = writer_threads()
    stats = logger.stats()
    closed = logger.close(5)  # after a flush that returned True there is nothing left
    return {
        "logged": logged,
        "flushed": flushed,
        "flush_seconds": flush_seconds,
        "writer_threads": alive,
        "stats": stats,
        "closed": closed,
    }


def child_flood(probe: Probe, dsn: str, schema: str, run: str, count: int) -> dict[str, Any]:
    logger = LlamaLogger(dsn, schema=schema)
    begun = time.perf_counter()
    for number in range(count):
        logger.created(("track", number), run=run, n=number)
    log_seconds = time.perf_counter() - begun
    flushed = logger.flush(120)
    total_seconds = time.perf_counter() - begun
    stats = logger.stats()
    logger.close(15)
    return {
        "logged": count,
        "log_seconds": log_seconds,
        "total_seconds": total_seconds,
        "flushed": flushed,
        "stats": stats,
    }


class HostileRepr:
    """A detail whose ``repr`` (and ``str``) raises a ``BaseException``."""

    def __init__(self, exc: type[BaseException]) -> None:
        self.exc = exc

    def __repr__(self) -> str:
        raise self.exc("raised by a detail's __repr__")

    __str__ = __repr__


class BadMapping(collections.abc.Mapping[str, int]):
    """A Mapping whose iteration raises."""

    def __getitem__(self, key: str) -> int:
        raise RuntimeError("raised by a detail's __getitem__")

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("raised by a detail's __iter__")


class BadList(list[int]):
    """A list whose iteration raises."""

    def __iter__(self) -> Iterator[int]:
        raise RuntimeError("raised by a detail's __iter__")


def bad_detail(kind: str) -> object:
    return {
        "SystemExit": lambda: HostileRepr(SystemExit),
        "KeyboardInterrupt": lambda: HostileRepr(KeyboardInterrupt),
        "Mapping": BadMapping,
        "list": lambda: BadList([1, 2]),
    }[kind]()


def child_bad_details(
    probe: Probe, dsn: str, schema: str, run: str, kind: str, good: tuple[int, int, int]
) -> dict[str, Any]:
    """``good[0]`` good events, the bad one, ``good[1]`` good ones, flush; then ``good[2]``
    more and flush again (is the writer still there?). A long flush_interval keeps the first
    ones in one batch."""
    logger = LlamaLogger(dsn, schema=schema, flush_interval=5.0)
    number = 0
    for _ in range(good[0]):
        logger.created(("track", number), run=run, n=number)
        number += 1
    raised = None
    try:
        logger.created(("track", -1), run=run, n="bad", bad=bad_detail(kind))
    except BaseException as exc:  # raising at the call is a finding, not a bench failure
        raised = type(exc).__name__
    for _ in range(good[1]):
        logger.created(("track", number), run=run, n=number)
        number += 1
    first = logger.flush(15)
    for _ in range(good[2]):
        logger.created(("track", number), run=run, n=number)
        number += 1
    second = logger.flush(15) if good[2] else None
    alive = writer_threads()
    stats = logger.stats()
    logger.close(2)  # not measured here; a dead writer would hold close() for its timeout
    return {
        "good": number,
        "raised_at_call": raised,
        "first_flush": first,
        "second_flush": second,
        "writer_threads": alive,
        "stats": stats,
    }


def child_fork_in_job(probe: Probe, dsn: str, schema: str, run: str, events: int) -> dict[str, Any]:
    logger = LlamaLogger(dsn, schema=schema)
    read_end, write_end = os.pipe()
    with logger.job("outer"):
        for number in range(100):
            logger.created(("track", number), run=run, p="parent", n=number)
        pid = os.fork()
        if pid == 0:  # the child: a nested job, then os._exit, as a pool's worker would end
            os.close(read_end)
            try:
                begun = time.monotonic()
                with logger.job("nested"):
                    for number in range(events):
                        logger.created(("track", number), run=run, p="child", n=number)
                report = {"job_end_seconds": time.monotonic() - begun, "stats": logger.stats()}
                os.write(write_end, json.dumps(report).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as pipe:
            child = json.loads(pipe.read() or b"{}")
        for number in range(100, 200):
            logger.created(("track", number), run=run, p="parent", n=number)
    flushed = logger.flush(15)
    logger.close(10)
    return {"child": child, "parent_flushed": flushed, "child_events": events}


def child_fork_in_outage(
    probe: Probe,
    dsn: str,
    schema: str,
    run: str,
    events: int,
    ready: Any,
    down: Any,
    forked: Any,
    up: Any,
) -> dict[str, Any]:
    logger = LlamaLogger(dsn, schema=schema)
    for number in range(100):
        logger.created(("track", number), run=run, p="parent", n=number)
    before = logger.flush(15)
    ready.set()
    down.wait(60)
    lines_before = len(probe.lines)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the forked child: one task (an outermost job), then exit as a pool would
        os.close(read_end)
        try:
            begun = time.monotonic()
            with logger.job("task"):
                for number in range(events):
                    logger.created(("track", number), run=run, p="child", n=number)
            ended = time.monotonic() - begun
            lines = probe.lines[lines_before:]
            report = {
                "task_end_seconds": ended,
                "stats": logger.stats(),
                "levels": probe.levels(lines),
                "first_lines": lines[:3],
                "all_lines": lines[:50],
                "writer_threads": writer_threads(),
            }
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        child = json.loads(pipe.read() or b"{}")
    forked.set()
    up.wait(120)
    flushed = logger.flush(30)
    stats = logger.stats()
    logger.close(15)
    return {
        "child": child,
        "parent_flush_before": before,
        "parent_flushed": flushed,
        "stats": stats,
    }


def child_close_down(
    probe: Probe, dsn: str, schema: str, run: str, events: int, ready: Any, down: Any
) -> dict[str, Any]:
    baseline = {t.ident for t in threading.enumerate()}
    logger = LlamaLogger(dsn, schema=schema)
    for number in range(100):
        logger.created(("track", number), run=run, p="before", n=number)
    before = logger.flush(15)
    ready.set()
    down.wait(60)
    for number in range(events):
        logger.created(("track", number), run=run, p="down", n=number)
    begun = time.monotonic()
    closed = logger.close()
    close_seconds = time.monotonic() - begun
    left = sorted(t.name for t in threading.enumerate() if t.ident not in baseline)
    alive = writer_threads()
    stats = logger.stats()
    # Does anything still move once close() has returned? (A writer left running counts
    # its batch again when it gives up.)
    time.sleep(LATER)
    return {
        "flush_before": before,
        "closed": closed,
        "close_seconds": close_seconds,
        "threads_after_close": left,
        "writer_threads": alive,
        "stats": stats,
        "threads_later": sorted(t.name for t in threading.enumerate() if t.ident not in baseline),
        "stats_later": logger.stats(),
        "logged": events + 100,
    }


def child_spill_files(
    probe: Probe, dsn: str, schema: str, run: str, events: int, rate: int, ready: Any, down: Any
) -> dict[str, Any]:
    """``events`` logged in jobs of five while the server is down (``rate`` a second, 0: as
    fast as a loop can): how many spill files hold them?"""
    logger = LlamaLogger(dsn, schema=schema)
    before = logger.flush(15)
    ready.set()
    down.wait(60)

    def log_one(number: int) -> None:
        if number % 5 == 0:
            with logger.job("album"):
                for n in range(number, min(number + 5, events)):
                    logger.created(("track", n), run=run, p="down", n=n)

    begun = time.monotonic()
    if rate:
        paced(log_one, rate, events / rate)
    else:
        for number in range(0, events, 5):
            log_one(number)
    log_seconds = time.monotonic() - begun
    flushed = logger.flush(60)
    # Waiting files, also the one a replay attempt may hold claimed at this moment.
    files = sum(
        not path.name.endswith(".partial")
        for path in Path(os.environ["XDG_STATE_HOME"]).rglob("*.jsonl*")
    )
    stats = logger.stats()
    logger.close(15)
    return {
        "flush_before": before,
        "flushed": flushed,
        "log_seconds": log_seconds,
        "files": files,
        "stats": stats,
    }


def child_recover(
    probe: Probe, dsn: str, schema: str, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A new logger with the same settings: does it bring in what was kept on disk?
    (Its close() replays whatever spill files it finds.)"""
    logger = LlamaLogger(dsn, schema=schema, **(options or {}))
    flushed = logger.flush(60)
    stats = logger.stats()
    logger.close(15)
    return {"flushed": flushed, "stats": stats}


def child_bad_option(probe: Probe, dsn: str, schema: str) -> dict[str, Any]:
    baseline = {t.ident for t in threading.enumerate()}
    error: BaseException | None = None
    try:
        LlamaLogger(dsn, schema=schema, batch_size=0).close(5)
    except BaseException as exc:  # which exception is the finding
        error = exc
    # Threads a failed constructor started should be gone at once; allow them 2 s to end.
    deadline = time.monotonic() + 2.0
    left: list[str] = []
    while time.monotonic() < deadline:
        left = sorted(t.name for t in threading.enumerate() if t.ident not in baseline)
        if not left:
            break
        time.sleep(0.05)
    return {
        "error": None,
        "raised": type(error).__name__ if error else None,
        "configuration_error": isinstance(error, llamalogger.ConfigurationError),
        "value_error": isinstance(error, ValueError),
        "threads_left": left,
    }


def child_refused(
    probe: Probe, dsn: str, schema: str, run: str, good: int, refused: int
) -> dict[str, Any]:
    logger = LlamaLogger(dsn, schema=schema, flush_interval=5.0)
    for number in range(good):
        logger.created(("track", number), run=run, n=number)
    for number in range(refused):
        logger.log("CREATED", f"faultbench-refused {number}", run=run, n=f"r{number}")
    begun = time.monotonic()
    flushed = logger.flush(120)
    seconds = time.monotonic() - begun
    stats = logger.stats()
    logger.close(10)
    return {"flushed": flushed, "flush_seconds": seconds, "stats": stats}


def spin(stop: threading.Event) -> None:
    """Keep the interpreter busy, as CPU-bound work in the same process does."""
    while not stop.is_set():
        sum(range(2000))


def child_slow_flood(
    probe: Probe, dsn: str, schema: str, count: int, busy_threads: int, flush: bool
) -> dict[str, Any]:
    """``count`` realistic events as fast as one thread can, defaults, while
    ``busy_threads`` threads of pure Python compete for the interpreter, then ``flush()``
    (or, without ``flush``, ``close()`` at once); counts the writes that another thread
    cancelled (a caller judging one hung, or close())."""
    from llamalogger._pipeline.sink import BatchSink

    cancelled = [0]
    cancel = BatchSink.cancel

    def counting_cancel(self: BatchSink, timeout: float = 2.0) -> None:
        cancelled[0] += self._active is not None  # a write was in progress
        cancel(self, timeout)

    BatchSink.cancel = counting_cancel  # type: ignore[method-assign]
    stop = threading.Event()
    busy = [threading.Thread(target=spin, args=(stop,), daemon=True) for _ in range(busy_threads)]
    for thread in busy:
        thread.start()
    try:
        logger = LlamaLogger(dsn, schema=schema)
        begun = time.perf_counter()
        log_events(logger, 0, count)
        log_seconds = time.perf_counter() - begun
        flushed = logger.flush(600) if flush else None
        total_seconds = time.perf_counter() - begun
        stats = logger.stats()
        closing = time.perf_counter()
        closed = logger.close()
        close_seconds = time.perf_counter() - closing
    finally:
        stop.set()
    return {
        "log_seconds": log_seconds,
        "total_seconds": total_seconds,
        "flushed": flushed,
        "stats": stats,
        "closed": closed,
        "close_seconds": close_seconds,
        "final": logger.stats(),
        "cancelled": cancelled[0],
        "lines": probe.lines,
    }


# --- the bench's side: scenarios, measurements, verdicts --------------------------------------


class Bench:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.summary: list[tuple[str, str, str]] = []

    def verdict(self, name: str, holds: bool | None, measured: str, why: str = "") -> None:
        word = "skipped" if holds is None else ("HOLDS" if holds else "FAILS")
        print(f"  policy: {word}{f' ({why})' if why else ''}")
        self.summary.append((name, word, measured))

    @contextlib.contextmanager
    def row(self, title: str) -> Iterator[tuple[str, str]]:
        """A fresh schema, a run id and a fresh XDG_STATE_HOME (the default spill dir)."""
        print(f"\n== {title}", flush=True)
        with (
            migrated_schema(self.server) as schema,
            tempfile.TemporaryDirectory(prefix="faultbench-state-") as state,
        ):
            os.environ["XDG_STATE_HOME"] = state
            yield schema, uuid.uuid4().hex[:12]

    def lost(self, schema: str, run: str, logged: int, **match: str) -> tuple[int, int, int]:
        stored, distinct = stored_rows(self.server, schema, run, **match)
        return stored, logged - distinct, stored - distinct

    # 1 ------------------------------------------------------------------------------------

    def flood(self) -> None:
        name = "flood"
        count = 300_000
        with self.row(f"{name}: {count:,} events as fast as one thread can, healthy server") as (
            schema,
            run,
        ):
            result = Child(child_flood, self.server.dsn, schema, run, count).report(180)
            if not self.failed_child(name, result):
                stored, lost, dups = self.lost(schema, run, count)
                stats = result["stats"]
                print(
                    f"  logged {count:,} in {result['log_seconds']:.2f} s "
                    f"({count / result['log_seconds']:,.0f}/s at the caller), all settled after "
                    f"{result['total_seconds']:.2f} s, flush() {result['flushed']}"
                )
                print(f"  stored {stored:,}  lost {lost:,}  duplicates {dups:,}  {counters(stats)}")
                measured = (
                    f"lost {lost:,} ({lost / count:.0%}), dropped {stats.get('dropped', 0):,}"
                )
                self.verdict(name, lost == 0 and dups == 0, measured, "nothing lost, no duplicate")

    # 2 ------------------------------------------------------------------------------------

    def terminate(self) -> None:
        name = "terminate"
        rate, seconds, kills = 20_000, 11.0, 10
        with self.row(
            f"{name}: {rate:,} events/s, the writer's backends terminated once a second "
            f"for {kills} s"
        ) as (schema, run):
            app = f"faultbench-{run}"
            # The logger's sessions carry this name so that only they are terminated.
            options: dict[str, Any] = {}
            started = SPAWN.Event()
            child = Child(
                child_paced,
                make_conninfo(self.server.dsn, application_name=app),
                schema,
                run,
                "0",
                rate,
                seconds,
                options,
                started,
                60.0,
            )
            started.wait(60)
            watch = CommitWatch(self.server, schema)
            gaps: list[float | None] = []
            terminated: list[int] = []
            begun = time.monotonic()
            with self.server.admin() as admin:
                for kill in range(kills):
                    next_at = begun + 1.0 + kill
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    terminated.append(self.terminate_backends(admin, app))
                    killed_at = time.monotonic()
                    top = watch.top() or 0
                    # Until the next termination; after the last one, as long as it takes.
                    limit = 0.98 if kill < kills - 1 else 30.0
                    gaps.append(watch.first_commit_after(top, killed_at, limit))
            watch.close()
            result = child.report(150)
            if self.failed_child(name, result):
                return
            logged = result["logged"]
            stored, lost, dups = self.lost(schema, run, logged)
            shown = ", ".join("-" if g is None else f"{g * 1000:.0f}" for g in gaps[:-1])
            last = "not within 30 s" if gaps[-1] is None else f"{gaps[-1] * 1000:.0f} ms"
            print(f"  backends terminated each second: {terminated}")
            print(
                f"  writing resumed after terminations 1-{kills - 1} (ms; - = not before the "
                f"next one, 1 s later): {shown}; after the last: {last}"
            )
            print(
                f"  logged {logged:,}  stored {stored:,}  lost {lost:,}  duplicates {dups:,}  "
                f"flush() {result['flushed']} after {result['flush_seconds']:.1f} s"
            )
            print(f"  {counters(result['stats'])}")
            within = sum(1 for g in gaps if g is not None and g <= RESUME_TARGET)
            resumed = within == len(gaps)
            measured = (
                f"lost {lost:,}; resumed within 1 s after {within}/{len(gaps)} "
                f"terminations (after the last: {last})"
            )
            valid = all(terminated)
            self.verdict(
                name,
                lost == 0 and dups == 0 and resumed and valid,
                measured,
                "nothing lost, writing resumed within 1 s every time"
                + ("" if valid else "; NOT VALID: some second terminated no backend"),
            )

    def terminate_backends(self, admin: Any, app: str) -> int:
        # On the embedded server every client session but the bench's is the logger's; on a
        # shared server only the sessions that carry this run's application_name are.
        query = sql.SQL(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 1000)) "
            "FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid() AND datname = current_database() "
            "AND (application_name = %s OR (%s AND application_name IS DISTINCT FROM %s))"
        )
        row = admin.execute(query, (app, self.server.kind == "embedded", ADMIN_APP))
        found = row.fetchone()
        return int(found[0]) if found else 0

    # 3 ------------------------------------------------------------------------------------

    def outage(self) -> None:
        name = "outage"
        rate, before, down, after = 10_000, 2.0, 20.0, 5.0
        title = f"{name}: server stopped {down:.0f} s while logging {rate:,} events/s"
        if not self.can_restart(name, title):
            return
        with self.row(title) as (schema, run):
            started = SPAWN.Event()
            child = Child(
                child_paced,
                self.server.dsn,
                schema,
                run,
                "0",
                rate,
                before + down + after,
                {},
                started,
                60.0,
            )
            started.wait(60)
            time.sleep(before)
            stopping = time.monotonic()
            self.server.stop()
            time.sleep(max(0.0, stopping + down - time.monotonic()))
            watch = CommitWatch(self.server, schema)
            up_at = self.server.start()
            top = watch.top() or 0
            gap = watch.first_commit_after(top, up_at, 30.0)
            watch.close()
            result = child.report(150)
            if self.failed_child(name, result):
                return
            logged = result["logged"]
            stored, lost, dups = self.lost(schema, run, logged)
            shown = "not within 30 s" if gap is None else f"{gap:.2f} s"
            print(f"  writing resumed {shown} after the server accepted connections again")
            print(
                f"  logged {logged:,}  stored {stored:,}  lost {lost:,}  duplicates {dups:,}  "
                f"flush() {result['flushed']} after {result['flush_seconds']:.1f} s"
            )
            print(f"  {counters(result['stats'])}")
            self.print_lines(result)
            ok = lost == 0 and dups == 0 and gap is not None and gap <= RESUME_TARGET
            self.verdict(
                name, ok, f"lost {lost:,}; resumed after {shown}", "nothing lost, resumed in 1 s"
            )

    # 4 ------------------------------------------------------------------------------------

    def shared_spill(self) -> None:
        name = "shared-spill"
        rate, before, down, after, runs = 5_000, 2.0, 6.0, 4.0, 3
        title = f"{name}: two processes, one spill_dir, a {down:.0f} s outage, {runs} runs"
        if not self.can_restart(name, title):
            return
        losses: list[int] = []
        dups_all: list[int] = []
        problems: list[str] = []
        for number in range(runs):
            with (
                self.row(f"{title}: run {number + 1}") as (schema, run),
                tempfile.TemporaryDirectory(prefix="faultbench-spill-") as spill,
            ):
                events = [SPAWN.Event(), SPAWN.Event()]
                children = [
                    Child(
                        child_paced,
                        self.server.dsn,
                        schema,
                        run,
                        str(process),
                        rate,
                        before + down + after,
                        {"spill_dir": spill},
                        events[process],
                        20.0,
                    )
                    for process in (0, 1)
                ]
                for event in events:
                    event.wait(60)
                time.sleep(before)
                stopping = time.monotonic()
                self.server.stop()
                time.sleep(max(0.0, stopping + down - time.monotonic()))
                self.server.start()
                results = [child.report(150) for child in children]
                logged = sum(r.get("logged", 0) for r in results)
                stored, lost, dups = self.lost(schema, run, logged)
                left = sum(1 for p in Path(spill).rglob("*") if p.is_file())
                recovered = Child(child_recover, self.server.dsn, schema, {"spill_dir": spill})
                recovered.report(120)
                _, lost_later, dups = self.lost(schema, run, logged)
                losses.append(lost_later)
                dups_all.append(dups)
                print(
                    f"  logged {logged:,}  stored {stored:,}  lost {lost:,}  files left in "
                    f"spill_dir {left}; after a new logger with that spill_dir: lost "
                    f"{lost_later:,}, duplicates {dups:,}"
                )
                for process, result in enumerate(results):
                    if "error" in result:
                        problems.append(f"process {process}: {result['error']}")
                        print(f"  process {process}: {result['error']}")
                        continue
                    deaths = result["thread_deaths"]
                    if deaths or not result["flushed"] or not result["writer_threads"]:
                        problems.append(f"run {number + 1} process {process}")
                    print(
                        f"  process {process}: flush() {result['flushed']} after "
                        f"{result['flush_seconds']:.1f} s, writer threads "
                        f"{result['writer_threads']}, threads died {deaths or 'none'}; "
                        f"{counters(result['stats'])}"
                    )
                    self.print_lines(result, indent="    ")
        measured = f"lost per run {losses}, duplicates {dups_all}, {len(problems)} process problems"
        ok = not any(losses) and not any(dups_all) and not problems
        self.verdict(name, ok, measured, "nothing lost or doubled, every writer alive and flushed")

    # 5, 6 ---------------------------------------------------------------------------------

    def hostile_repr(self) -> None:
        self._bad_details(
            "hostile-repr",
            "a detail whose __repr__ raises",
            ["SystemExit", "KeyboardInterrupt"],
            (500, 500, 100),
        )

    def bad_iteration(self) -> None:
        self._bad_details(
            "bad-iteration",
            "a Mapping / list subclass whose iteration raises, in a batch of 999 good events",
            ["Mapping", "list"],
            (500, 499, 0),
        )

    def _bad_details(
        self, name: str, title: str, kinds: list[str], good: tuple[int, int, int]
    ) -> None:
        holds = True
        measured: list[str] = []
        for kind in kinds:
            with self.row(f"{name}: {title} ({kind})") as (schema, run):
                result = Child(child_bad_details, self.server.dsn, schema, run, kind, good).report(
                    90
                )
                if self.failed_child(f"{name} {kind}", result, verdict=False):
                    holds = False
                    measured.append(f"{kind}: {result['error']}")
                    continue
                logged = result["good"]
                _, distinct = stored_rows(self.server, schema, run)
                bad_stored, _ = stored_rows(self.server, schema, run, n="bad")
                good_lost = logged - (distinct - bad_stored)
                stats = result["stats"]
                print(
                    f"  raised at the call: {result['raised_at_call']}; good events lost "
                    f"{good_lost:,} of {logged:,}; the bad one stored {bad_stored}"
                )
                print(
                    f"  flush() {result['first_flush']}, then {result['second_flush']}; writer "
                    f"threads {result['writer_threads']}; threads died "
                    f"{result['thread_deaths'] or 'none'}"
                )
                print(f"  {counters(stats)}")
                self.print_lines(result)
                accounted = bad_stored or stats.get("rejected", 0) >= 1
                ok = (
                    good_lost == 0
                    and result["first_flush"] is True
                    and result["second_flush"] in (True, None)
                    and bool(result["writer_threads"])
                    and bool(accounted)
                    and result["raised_at_call"] is None
                )
                holds = holds and ok
                measured.append(
                    f"{kind}: good lost {good_lost}, flush {result['first_flush']}, writer "
                    f"{'alive' if result['writer_threads'] else 'dead'}"
                )
        self.verdict(
            name,
            holds,
            "; ".join(measured),
            "good events all stored, bad one stored or dead-lettered, writer alive, flush True",
        )

    # 7 ------------------------------------------------------------------------------------

    def fork_in_job(self) -> None:
        name = "fork-in-job"
        events = 1_000
        with self.row(
            f"{name}: os.fork() inside a job; the child logs {events:,} events in a nested job, "
            "then os._exit"
        ) as (schema, run):
            result = Child(child_fork_in_job, self.server.dsn, schema, run, events).report(90)
            if self.failed_child(name, result):
                return
            child = result["child"]
            _, child_lost, _ = self.lost(schema, run, events, p="child")
            _, parent_lost, _ = self.lost(schema, run, 200, p="parent")
            print(
                f"  child: nested job ended in {child.get('job_end_seconds', float('nan')):.3f} s;"
                f" its events lost {child_lost:,} of {events:,}; parent's lost {parent_lost} "
                f"of 200"
            )
            self.verdict(
                name,
                child_lost == 0 and parent_lost == 0,
                f"child lost {child_lost:,} of {events:,}",
                "the child's events are stored",
            )

    # 8 ------------------------------------------------------------------------------------

    def fork_in_outage(self) -> None:
        name = "fork-in-outage"
        events = 1_000
        title = f"{name}: a forked child logs {events:,} events in one task during an outage"
        if not self.can_restart(name, title):
            return
        with self.row(title) as (schema, run):
            ready, down, forked, up = (SPAWN.Event() for _ in range(4))
            child = Child(
                child_fork_in_outage,
                self.server.dsn,
                schema,
                run,
                events,
                ready,
                down,
                forked,
                up,
            )
            ready.wait(60)
            self.server.stop()
            down.set()
            forked.wait(120)
            self.server.start()
            up.set()
            result = child.report(120)
            if self.failed_child(name, result):
                return
            forked_report = result["child"]
            _, lost_now, _ = self.lost(schema, run, events, p="child")
            recovered = Child(child_recover, self.server.dsn, schema).report(120)
            _, lost_later, dups = self.lost(schema, run, events, p="child")
            task_end = forked_report.get("task_end_seconds", float("nan"))
            print(
                f"  the child's task end took {task_end:.2f} s; it reported "
                f"{forked_report.get('levels')} on the llamalogger logger"
            )
            for level, text in forked_report.get("first_lines", []):
                print(f"    {level}: {text}")
            child_stats = forked_report.get("stats", {})
            balance, _ = identity(child_stats)
            print(
                f"  child's counters at its end: {counters(child_stats)}; enqueued - (written + "
                f"rejected + dropped + on_disk + queued) = {balance:,}"
            )
            print(
                f"  its events lost once the server was back and the parent flushed: "
                f"{lost_now:,} of {events:,}; after a new logger started: {lost_later:,} "
                f"(duplicates {dups}; new logger flush() {recovered.get('flushed')})"
            )
            # Reported: a line that gives the count ("1000" or "1,000" events).
            reported = any(
                str(events) in text.replace(",", "")
                for _, text in forked_report.get("all_lines", [])
            )
            ok = task_end <= 1.0 and (lost_later == 0 or reported)
            self.verdict(
                name,
                ok,
                f"task end {task_end:.2f} s; lost {lost_later:,} of {events:,}; "
                f"lines {forked_report.get('levels')}",
                "the task end does not wait on the database; nothing vanishes unreported",
            )

    # 9 ------------------------------------------------------------------------------------

    def close_down(self) -> None:
        name = "close-down"
        events = 40_000
        title = f"{name}: close() with the server down and {events:,} events queued"
        if not self.can_restart(name, title):
            return
        with self.row(title) as (schema, run):
            ready, down = SPAWN.Event(), SPAWN.Event()
            child = Child(child_close_down, self.server.dsn, schema, run, events, ready, down)
            ready.wait(60)
            self.server.stop()
            down.set()
            result = child.report(120)
            self.server.start()
            if self.failed_child(name, result):
                return
            stats = result["stats"]
            _, lost_now, _ = self.lost(schema, run, events, p="down")
            recovered = Child(child_recover, self.server.dsn, schema).report(120)
            _, lost_later, dups = self.lost(schema, run, events, p="down")
            balance, missing = identity(stats)
            later = result["stats_later"]
            balance_later, _ = identity(later)
            print(
                f"  close() returned {result['closed']} after {result['close_seconds']:.1f} s; "
                f"threads still running then: {result['threads_after_close'] or 'none'}; "
                f"{LATER:.0f} s later: {result['threads_later'] or 'none'}"
            )
            print(f"  at close: {counters(stats)}")
            print(f"  {LATER:.0f} s later: {counters(later)}")
            print(
                f"  enqueued - (written + rejected + dropped + on_disk + queued) = {balance:,} "
                f"at close, {balance_later:,} {LATER:.0f} s later"
                + (f"  (keys absent today: {', '.join(missing)})" if missing else "")
            )
            self.print_lines(result)
            print(
                f"  events logged while down lost: {lost_now:,} of {events:,} at once; "
                f"{lost_later:,} after a new logger started (flush() {recovered.get('flushed')},"
                f" duplicates {dups})"
            )
            dropped = later.get("dropped", 0)
            ok = (
                balance == 0
                and balance_later == 0
                and not result["writer_threads"]
                and dropped <= events
                and lost_later <= dropped
            )
            self.verdict(
                name,
                ok,
                f"close {result['close_seconds']:.1f} s, writer "
                f"{'running' if result['writer_threads'] else 'stopped'}, dropped {dropped:,} "
                f"of {events:,}, identity off by {balance:,} at close, {balance_later:,} later",
                "the writer is stopped, the counters add up, nothing lost unreported",
            )

    # 9b -----------------------------------------------------------------------------------

    def spill_files(self) -> None:
        name = "spill-files"
        events = 30_000
        title = f"{name}: {events:,} events logged in jobs of 5 while the server is down"
        if not self.can_restart(name, title):
            return
        measured = []
        ok = True
        for rate in (0, 5_000):
            pace = f"{rate:,} events/s" if rate else "as fast as a loop can"
            with self.row(f"{title}, {pace}") as (schema, run):
                ready, down = SPAWN.Event(), SPAWN.Event()
                child = Child(
                    child_spill_files, self.server.dsn, schema, run, events, rate, ready, down
                )
                ready.wait(60)
                self.server.stop()
                down.set()
                result = child.report(180)
                self.server.start()
                if self.failed_child(name, result, verdict=False):
                    ok = False
                    continue
                recovered = Child(child_recover, self.server.dsn, schema).report(120)
                _, lost, dups = self.lost(schema, run, events, p="down")
                files = result["files"]
                print(
                    f"  logged in {result['log_seconds']:.1f} s; flush() {result['flushed']}; "
                    f"{files} spill files ({(events * 6 // 5) // max(files, 1):,} records each)"
                )
                print(f"  {counters(result['stats'])}")
                print(
                    f"  after a new logger replayed them (flush() {recovered.get('flushed')}): "
                    f"lost {lost:,}, duplicates {dups:,}"
                )
                measured.append(f"{pace}: {files} files, lost {lost:,}")
                ok = ok and files <= 50 and lost == 0 and dups == 0
        self.verdict(name, ok, "; ".join(measured), "tens of files at most, nothing lost")

    # 10 -----------------------------------------------------------------------------------

    def bad_option(self) -> None:
        name = "batch-size-0"
        with self.row(f"{name}: LlamaLogger(dsn, batch_size=0)") as (schema, _):
            result = Child(child_bad_option, self.server.dsn, schema).report(60)
            if self.failed_child(name, result):
                return
            print(
                f"  raised {result['raised']} (ConfigurationError: {result['configuration_error']}"
                f", ValueError: {result['value_error']}); threads left after 2 s: "
                f"{result['threads_left'] or 'none'}"
            )
            self.verdict(
                name,
                result["configuration_error"] and not result["threads_left"],
                f"{result['raised']}, {len(result['threads_left'])} threads left",
                "ConfigurationError, no thread left behind",
            )

    # 11 -----------------------------------------------------------------------------------

    def refused(self) -> None:
        name = "refused-rows"
        good, refused = 500, 500
        with self.row(
            f"{name}: one batch of {good} good events and {refused} the server refuses row by row"
        ) as (schema, run):
            with self.server.admin() as admin:
                admin.execute(
                    sql.SQL(
                        "ALTER TABLE {}.llama_log ADD CONSTRAINT faultbench_refuse "
                        "CHECK (message NOT LIKE 'faultbench-refused%%') NOT VALID"
                    ).format(sql.Identifier(schema))
                )
            result = Child(child_refused, self.server.dsn, schema, run, good, refused).report(180)
            if self.failed_child(name, result):
                return
            stored, _ = stored_rows(self.server, schema, run)
            stats = result["stats"]
            levels = result["levels"]
            lines = sum(levels.values())
            print(
                f"  good stored {stored:,} of {good:,}; flush() {result['flushed']} after "
                f"{result['flush_seconds']:.1f} s; lines on the llamalogger logger: {levels}"
            )
            print(f"  {counters(stats)}")
            self.print_lines(result)
            ok = stored == good and stats.get("rejected") == refused and lines <= 2
            self.verdict(
                name,
                ok,
                f"{levels.get('ERROR', 0)} ERROR lines for {refused} refused rows",
                "refused rows counted, at most 2 lines for one reason",
            )

    # --- helpers ---------------------------------------------------------------------------

    # slow is not down ---------------------------------------------------------------------

    def slow_server(self) -> None:
        """A healthy server that takes rows slowly: a trigger sleeps 1 ms every 10th row."""
        self._slow_flood(
            "slow-server",
            "300,000 realistic events at full speed, defaults; the server sleeps 1 ms every "
            "10th row (a trigger)",
            slow_every=10,
            busy_threads=0,
        )

    def slow_close(self) -> None:
        """The same slow server, and close() (exit_timeout 10 s) as soon as all is logged."""
        name = "slow-close"
        count = 300_000
        title = (
            f"{count:,} realistic events at full speed into the slow server of slow-server, "
            "then close() at once (exit_timeout 10 s)"
        )
        with self.row(f"{name}: {title}") as (schema, _run):
            self.slow_down(schema, 10)
            result = Child(child_slow_flood, self.server.dsn, schema, count, 0, False).report(900)
            if self.failed_child(name, result):
                return
            stored, distinct = self.stored_events(schema)
            final = result["final"]
            print(
                f"  logged {count:,} in {result['log_seconds']:.1f} s; close() {result['closed']} "
                f"in {result['close_seconds']:.2f} s, writes cancelled {result['cancelled']}"
            )
            print(f"  stored {stored:,} rows, {distinct:,} distinct events  {counters(final)}")
            self.print_lines(result)
            said = any(
                level == "WARNING" and f"closed with {final['on_disk']} events" in text
                for level, text in result.get("first_lines", []) + result.get("lines", [])
            )
            measured = (
                f"close() {result['close_seconds']:.2f} s, written {final['written']:,}, on disk "
                f"{final['on_disk']:,}, dropped {final['dropped']:,}, warned with the count: {said}"
            )
            holds = (
                result["close_seconds"] < 10.0 and final["dropped"] == 0 and stored == distinct
            ) and (said or final["on_disk"] == 0)
            self.verdict(name, holds, measured, "within exit_timeout, nothing dropped, said")

    def starved_writer(self) -> None:
        """A healthy server; the writer is short of the interpreter: four busy threads."""
        self._slow_flood(
            "starved-writer",
            "300,000 realistic events at full speed, defaults; 4 threads of pure Python "
            "busy in the same process",
            slow_every=0,
            busy_threads=4,
        )

    def _slow_flood(self, name: str, title: str, *, slow_every: int, busy_threads: int) -> None:
        count = 300_000
        with self.row(f"{name}: {title}") as (schema, _run):
            if slow_every:
                self.slow_down(schema, slow_every)
            result = Child(
                child_slow_flood, self.server.dsn, schema, count, busy_threads, True
            ).report(900)
            if self.failed_child(name, result):
                return
            stored, distinct = self.stored_events(schema)
            stats, final = result["stats"], result["final"]
            print(
                f"  logged {count:,} in {result['log_seconds']:.1f} s, all settled after "
                f"{result['total_seconds']:.1f} s ({count / result['total_seconds']:,.0f}/s), "
                f"flush() {result['flushed']}"
            )
            print(
                f"  written {stats['written']:,}  spilled {stats['spilled']:,}  dropped "
                f"{stats['dropped']:,}  writes cancelled {result['cancelled']}  retried "
                f"{stats['retried']:,}"
            )
            print(
                f"  close() {result['closed']} in {result['close_seconds']:.2f} s, on disk "
                f"after it {final['on_disk']:,}; stored {stored:,} rows, {distinct:,} distinct "
                f"events  {counters(final)}"
            )
            self.print_lines(result)
            lost = count - distinct
            measured = (
                f"written {stats['written']:,}, spilled {stats['spilled']:,}, dropped "
                f"{stats['dropped']:,}, cancelled {result['cancelled']}"
            )
            holds = (stats["dropped"], stats["spilled"], lost, stored - distinct) == (0, 0, 0, 0)
            self.verdict(name, holds, measured, "nothing spilled or dropped, all stored once")

    def slow_down(self, schema: str, every: int) -> None:
        """A ``BEFORE INSERT`` trigger on ``schema``'s ``llama_log`` that sleeps 1 ms for
        every ``every``-th row."""
        with self.server.admin() as admin:
            admin.execute(
                sql.SQL(
                    "CREATE SEQUENCE {schema}.slow_rows;"
                    " CREATE FUNCTION {schema}.slow_row() RETURNS trigger LANGUAGE plpgsql AS $$"
                    " BEGIN IF nextval({sequence}) % {every} = 0 THEN PERFORM pg_sleep(0.001);"
                    " END IF; RETURN NEW; END $$;"
                    " CREATE TRIGGER slow_row BEFORE INSERT ON {schema}.llama_log"
                    " FOR EACH ROW EXECUTE FUNCTION {schema}.slow_row();"
                ).format(
                    schema=sql.Identifier(schema),
                    sequence=sql.Literal(f"{schema}.slow_rows"),
                    every=sql.Literal(every),
                )
            )

    def stored_events(self, schema: str) -> tuple[int, int]:
        """Rows of ``llama_log`` and the distinct events among them: ``log_events`` gives
        event n the id n as its entity's (or, for a link, its related entity's)."""
        query = sql.SQL(
            "SELECT count(*), count(DISTINCT coalesce(related_id, entity_id)) FROM {}.llama_log"
        ).format(sql.Identifier(schema))
        with self.server.admin() as admin:
            row = admin.execute(query).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def can_restart(self, name: str, title: str) -> bool:
        if self.server.can_restart:
            return True
        print(f"\n== {title}")
        print("  skipped: the bench may not stop this server (add --allow-restart)")
        self.summary.append((name, "skipped", "needs a server the bench may stop"))
        return False

    def failed_child(self, name: str, result: dict[str, Any], *, verdict: bool = True) -> bool:
        if result.get("error"):
            print(f"  the scenario's process failed: {result['error']}")
            if result.get("thread_deaths"):
                print(f"  threads died: {result['thread_deaths']}")
            if verdict:
                self.verdict(name, False, result["error"])
            return True
        return False

    @staticmethod
    def print_lines(result: dict[str, Any], indent: str = "  ") -> None:
        levels = result.get("levels") or {}
        if levels:
            print(f"{indent}llamalogger log lines: {levels}")
            for level, text in result.get("first_lines", []):
                print(f"{indent}  {level}: {text}")


def counters(stats: dict[str, int]) -> str:
    keys = ("enqueued", "written", "dropped", "rejected", "spilled", "replayed", "on_disk")
    shown = ", ".join(f"{key} {stats[key]:,}" for key in keys if key in stats)
    queued = stats.get("queued", stats.get("queue_depth"))
    return f"stats: {shown}, queued {queued:,}" if queued is not None else f"stats: {shown}"


def identity(stats: dict[str, int]) -> tuple[int, list[str]]:
    """enqueued - (written + rejected + dropped + on_disk + queued), and the keys missing
    (today's writer has no ``on_disk``; ``queue_depth`` stands in for ``queued``)."""
    missing = [key for key in ("on_disk", "queued") if key not in stats]
    queued = stats.get("queued", stats.get("queue_depth", 0))
    settled = (
        stats.get("written", 0)
        + stats.get("rejected", 0)
        + stats.get("dropped", 0)
        + stats.get("on_disk", 0)
        + queued
    )
    return stats.get("enqueued", 0) - settled, missing


SCENARIOS = {
    "flood": Bench.flood,
    "terminate": Bench.terminate,
    "outage": Bench.outage,
    "shared-spill": Bench.shared_spill,
    "hostile-repr": Bench.hostile_repr,
    "bad-iteration": Bench.bad_iteration,
    "fork-in-job": Bench.fork_in_job,
    "fork-in-outage": Bench.fork_in_outage,
    "close-down": Bench.close_down,
    "spill-files": Bench.spill_files,
    "batch-size-0": Bench.bad_option,
    "refused-rows": Bench.refused,
    "slow-server": Bench.slow_server,
    "slow-close": Bench.slow_close,
    "starved-writer": Bench.starved_writer,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--server", choices=["embedded", "machine"], default="embedded")
    parser.add_argument(
        "--allow-restart",
        action="store_true",
        help="with --server machine: stop and start the machine's cluster (pg_ctlcluster)",
    )
    parser.add_argument(
        "--dsn",
        default=MACHINE_DSN,
        help="with --server machine: the server to use (--allow-restart only for the default)",
    )
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = parser.parse_args()
    if args.allow_restart and args.dsn != MACHINE_DSN:
        parser.error("--allow-restart restarts the machine's cluster: only with the default --dsn")
    command = " ".join(shlex.quote(part) for part in ["python", *sys.argv])
    with fault_server(args.server, allow_restart=args.allow_restart, dsn=args.dsn) as server:
        print(f"PostgreSQL {server.version} ({server.kind}), llamalogger {llamalogger.__version__}")
        print(f"command: {command}")
        print("default settings unless a row names an option; XDG_STATE_HOME is a new temporary")
        print("directory for each row (where a default spill directory, if any, would go)")
        bench = Bench(server)
        begun = time.monotonic()
        for name in args.only or list(SCENARIOS):
            SCENARIOS[name](bench)
        print(f"\n== summary ({time.monotonic() - begun:.0f} s)")
        width = max(len(name) for name, _, _ in bench.summary)
        for name, word, measured in bench.summary:
            print(f"{name:<{width}}  {word:<7}  {measured}")


if __name__ == "__main__":
    main()
