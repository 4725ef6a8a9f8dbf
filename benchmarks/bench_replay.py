"""Spill replay against live writing: the same events, written live and replayed from disk.

    python benchmarks/bench_replay.py [--dsn DSN] [--events 300000] [--repeat 5]
                                      [--against OTHER/src] [--resume]

The same realistic events as ``bench_writer.py`` (four kinds in turn, a message and 2-3
details each, a job of 20 events with its job record), two ways, alternating run by run:

1. Live: a new logger (defaults, a spill directory of its own) logs them as fast as one
   thread can; events/s from the first call until ``flush()`` returns.
2. Replay: the same events are first logged by a logger that cannot reach the database (a
   role that does not exist, on the same host, port and database, so its spill files are
   for the same target); they wait in its spill directory. A new logger on the real DSN
   with that directory then replays them; events/s from its construction until
   ``stats()["replayed"]`` counts every row (events and job records). Shown besides: how
   soon its first rows were committed, and the spill files' count and size.

Every measured run starts from emptied tables (TRUNCATE and CHECKPOINT); the ratio is
replay over live, pair by pair. With ``--against SRC`` (the ``src`` directory of another
checkout, e.g. the code before a change), as many runs follow, each replaying one backlog
twice in child processes, alternating which goes first: with this tree's llamalogger and with
SRC's; the ratio is this one over that one, pair by pair. A third figure, with ``--resume`` (needs
CREATEROLE): a logger whose role may not log in spills the events; the role is then let in,
and the figure is the time from then until its first replayed rows are committed and until
all are.

Without --dsn / LLAMALOG_DSN it starts the embedded PostgreSQL. Prints measured numbers
only; nothing here is asserted. Figures are medians of the runs, with the range.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from _support import scratch_schema
from bench_writer import JOB_SIZE, log_events, ratio_line, spread
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from llamalogger import LlamaLogger

_POLL = 0.002  # how often a replay's progress is looked at: well below its figures


def fresh_tables(dsn: str, schema: str) -> None:
    """Empty the tables and checkpoint, so that every run starts from the same state."""
    tables = ("llama_log", "llama_job", "llama_log_spill_replays")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {}").format(
                sql.SQL(", ").join(sql.Identifier(schema, table) for table in tables)
            )
        )
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")


def as_role(dsn: str, role: str) -> str:
    """``dsn`` for another role: the same host, port and database, so the same spill target."""
    params = conninfo_to_dict(dsn)
    dbname = params.get("dbname") or params.get("user") or "postgres"
    return make_conninfo(dsn, user=role, dbname=dbname, password="")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The outage's own warnings are expected here: kept off the figures' output."""
    diagnostics = logging.getLogger("llamalogger")
    level = diagnostics.level
    diagnostics.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        diagnostics.setLevel(level)


def rows_of(events: int) -> int:
    """Events plus the job records of their jobs (one per 20)."""
    return events + -(-events // JOB_SIZE)


def open_logger(dsn: str, schema: str, spill: str | Path, events: int) -> LlamaLogger:
    """The logger of every run: defaults, but a queue that holds the whole run (as in
    ``bench_writer.py``'s end to end), so that no caller waits for room and no write is
    cancelled for it; each run's own spill directory."""
    return LlamaLogger(dsn, schema=schema, spill_dir=spill, queue_size=rows_of(events) + 1)


def live(dsn: str, schema: str, events: int) -> float:
    with (
        tempfile.TemporaryDirectory() as spill,
        open_logger(dsn, schema, spill, events) as logger,
    ):
        started = time.perf_counter()
        log_events(logger, 0, events)
        assert logger.flush(timeout=600)
        took = time.perf_counter() - started
        stats = logger.stats()
    assert stats["written"] == rows_of(events), stats
    assert stats["spilled"] == 0, "the live run met an outage"
    return events / took


def make_backlog(dsn: str, schema: str, events: int, spill: Path) -> tuple[int, int]:
    """Log ``events`` with the database out of reach; returns (files, bytes) on disk."""
    with (
        quiet(),
        open_logger(as_role(dsn, "llamalog_bench_nobody"), schema, spill, events) as logger,
    ):
        log_events(logger, 0, events)
        assert logger.flush(timeout=600)
    assert logger.stats()["on_disk"] == rows_of(events), logger.stats()
    files = list(spill.glob("*.jsonl"))
    return len(files), sum(file.stat().st_size for file in files)


def wait_replayed(logger: LlamaLogger, rows: int, started: float) -> tuple[float, float]:
    """Seconds from ``started`` until the first replayed rows were committed, and all."""
    first = None
    while (replayed := logger.stats()["replayed"]) < rows:
        if first is None and replayed:
            first = time.perf_counter() - started
        time.sleep(_POLL)
    done = time.perf_counter() - started
    return (done if first is None else first), done


def replay(dsn: str, schema: str, events: int) -> tuple[float, float, int, int]:
    """(events/s, seconds to the first commit, files, bytes) of replaying a backlog."""
    with tempfile.TemporaryDirectory() as directory:
        spill = Path(directory)
        files, size = make_backlog(dsn, schema, events, spill)
        fresh_tables(dsn, schema)
        started = time.perf_counter()
        with open_logger(dsn, schema, spill, events) as logger:
            first, done = wait_replayed(logger, rows_of(events), started)
        assert not list(spill.glob("*.jsonl*")), "files left behind"
    return events / done, first, files, size


# A replay in a child process, with the settings of open_logger(); prints its seconds.
_CHILD_REPLAY = """
import sys, time
from llamalogger import LlamaLogger
dsn, schema, spill, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
started = time.perf_counter()
with LlamaLogger(dsn, schema=schema, spill_dir=spill, queue_size=rows + 1) as logger:
    while logger.stats()["replayed"] < rows:
        time.sleep(0.002)
    print(time.perf_counter() - started)
"""


def replay_in_child(dsn: str, schema: str, spill: Path, events: int, source: str | None) -> float:
    """Events/s of replaying ``spill`` in a child process, with the llamalogger of
    ``source`` (a ``src`` directory), or this tree's."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = source
    fresh_tables(dsn, schema)
    command = [sys.executable, "-c", _CHILD_REPLAY, dsn, schema, str(spill), str(rows_of(events))]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return events / float(done.stdout)


def against(dsn: str, schema: str, events: int, source: str, turn: int) -> tuple[float, float]:
    """Events/s replaying one backlog with this tree and with ``source``, in turn."""
    with tempfile.TemporaryDirectory() as directory:
        backlog = Path(directory) / "backlog"
        make_backlog(dsn, schema, events, backlog)
        rates: dict[str | None, float] = {}
        for name in (None, source) if turn % 2 == 0 else (source, None):
            copy = Path(directory) / ("theirs" if name else "ours")
            shutil.copytree(backlog, copy)
            rates[name] = replay_in_child(dsn, schema, copy, events, name)
        return rates[None], rates[source]


def resume(dsn: str, schema: str, events: int) -> tuple[float, float]:
    """Seconds from letting a spilling logger's role in until its first replayed rows are
    committed, and until all are."""
    role = f"llamalog_bench_{uuid.uuid4().hex[:8]}"
    names = {"role": sql.Identifier(role), "schema": sql.Identifier(schema)}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {role} NOLOGIN").format(**names))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {schema} TO {role}").format(**names))
        conn.execute(
            sql.SQL("GRANT INSERT ON ALL TABLES IN SCHEMA {schema} TO {role}").format(**names)
        )
    try:
        with tempfile.TemporaryDirectory() as spill, quiet():
            logger = open_logger(as_role(dsn, role), schema, spill, events)
            try:
                log_events(logger, 0, events)
                assert logger.flush(timeout=600)
                time.sleep(3)  # an outage of some seconds: the retries are at their slowest
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(sql.SQL("ALTER ROLE {role} LOGIN").format(**names))
                return wait_replayed(logger, rows_of(events), time.perf_counter())
            finally:
                logger.close()
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {role}").format(**names))
            conn.execute(sql.SQL("DROP ROLE {role}").format(**names))


def rates(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} events/s {spread(values, 1, ',.0f')}"


def seconds(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s {spread(values, 1, '.3f')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--resume", action="store_true", help="also the resume figure")
    parser.add_argument("--against", metavar="SRC", help="also replay with SRC's llamalogger")
    args = parser.parse_args()
    shown = [arg if arg != args.dsn else shlex.quote(arg) for arg in sys.argv[1:]]
    print("command:", shlex.join(["python", "benchmarks/bench_replay.py", *shown]))
    with scratch_schema(args.dsn) as (dsn, schema, version):
        print(
            f"PostgreSQL {version}: {args.events} realistic events (a job record per "
            f"{JOB_SIZE}) written live, then replayed from a backlog, {args.repeat} times "
            "in turn; medians"
        )
        lives, replays, firsts = [], [], []
        backlog: list[tuple[int, int]] = []
        for _ in range(args.repeat):
            fresh_tables(dsn, schema)
            lives.append(live(dsn, schema, args.events))
            rate, first, files, size = replay(dsn, schema, args.events)
            replays.append(rate)
            firsts.append(first)
            backlog.append((files, size))
        files, size = backlog[0]
        print(f"  live: {rates(lives)}")
        print(
            f"  replay of a backlog of {files} spill files ({size / 2**20:.1f} MiB): "
            f"{rates(replays)}; first rows committed {seconds(firsts)} after the start"
        )
        print(
            "  " + ratio_line("replay / live", [r / w for r, w in zip(replays, lives, strict=True)])
        )
        if args.against:
            pairs = [against(dsn, schema, args.events, args.against, turn)
                     for turn in range(args.repeat)]  # fmt: skip
            ours = [mine for mine, _ in pairs]
            theirs = [other for _, other in pairs]
            print(
                f"  replay in a child process, one backlog each run: this tree {rates(ours)}, "
                f"{args.against} {rates(theirs)}; "
                + ratio_line("this / that", [mine / other for mine, other in pairs])
            )
        if args.resume:
            resumed = [resume(dsn, schema, args.events) for _ in range(args.repeat)]
            firsts = [first for first, _ in resumed]
            alls = [done for _, done in resumed]
            print(
                f"  after an outage, from the moment the database lets the writer in: first "
                f"rows committed {seconds(firsts)}, all {seconds(alls)}"
            )


if __name__ == "__main__":
    main()
