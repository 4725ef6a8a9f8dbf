"""`llamalog migrate` on a live table: how long writers and readers wait, against an UPDATE.

    python benchmarks/bench_migrate.py [--dsn DSN] [--rows 1000000]

A table at version 0001 holding ``--rows`` rows (trees of jobs, ten rows per job, 1 % without
a job) is migrated to the newest version by ``llamalog migrate`` in a child process while,
in this process:

* code written for 0001 INSERTs a row every 20 ms (no root_job_id: it predates the column);
* a reader SELECTs the rows of a random job by job_id every 20 ms;
* a ``LlamaLogger`` logs 5,000 events/s in jobs.

It prints the longest wait of an INSERT and of a SELECT while the migrate ran, the logger's
counters, the migrate's total time, the time of one full-table UPDATE of the same table in
the same run (same load, after a VACUUM FULL that packs the table as it was before the
migrate), and their ratio. Then the cost of the 0004 insert
trigger for COPY: rows that bring their root_job_id (the trigger's WHEN is false) with the
trigger enabled and disabled, and rows without one (the trigger fires).

Without --dsn / LLAMALOG_DSN it starts the embedded PostgreSQL. Prints measured numbers
only; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from _support import database
from psycopg import sql

from llamalogger import Category, LlamaLogger
from llamalogger.schema import migrate

ROWS_PER_JOB = 10
JOBS_PER_TREE = 20


def load(conn: psycopg.Connection, schema: str, rows: int) -> None:
    """``rows`` rows as 0001-era code wrote them, generated on the server."""
    # Job j's parent is job j-1 inside chains of JOBS_PER_TREE jobs; every 100th row has no job.
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.llama_log (logged_at, category, message, job_id, parent_job_id,"
            " job_name, entity_type, entity_id, details)"
            " SELECT now() - make_interval(secs => %(rows)s - i),"
            "  (enum_range(NULL::{}.llama_log_category))[1 + i %% 6],"
            "  'event ' || i,"
            "  CASE WHEN i %% 100 = 0 THEN NULL ELSE 'job-' || (i / %(per_job)s) END,"
            "  CASE WHEN i %% 100 = 0 OR (i / %(per_job)s) %% %(per_tree)s = 0 THEN NULL"
            "   ELSE 'job-' || (i / %(per_job)s - 1) END,"
            "  'import-track', 'track', (i %% 50000)::text, jsonb_build_object('n', i)"
            " FROM generate_series(1, %(rows)s) AS i"
        ).format(sql.Identifier(schema), sql.Identifier(schema)),
        {"rows": rows, "per_job": ROWS_PER_JOB, "per_tree": JOBS_PER_TREE},
    )
    conn.execute(sql.SQL("VACUUM ANALYZE {}.llama_log").format(sql.Identifier(schema)))


class Load:
    """The live traffic: old-code INSERTs, job_id SELECTs and a logger, on their own threads."""

    def __init__(self, dsn: str, schema: str, rows: int, events_per_second: int) -> None:
        self.dsn, self.schema, self.rows = dsn, schema, rows
        self.events_per_second = events_per_second
        self.stop = threading.Event()
        self.recording = threading.Event()
        self.insert_waits: list[float] = []
        self.select_waits: list[float] = []
        self.errors: list[str] = []
        self.spill_dir = tempfile.mkdtemp(prefix="bench-migrate-spill-")
        self.logger = LlamaLogger(dsn, schema=schema, spill_dir=self.spill_dir)
        self.logged = 0
        self.threads = [
            threading.Thread(target=self._guarded(self._old_inserts), daemon=True),
            threading.Thread(target=self._guarded(self._selects), daemon=True),
            threading.Thread(target=self._guarded(self._log_events), daemon=True),
        ]

    def _guarded(self, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except Exception as exc:  # reported at the end: a benchmark must not hang
                self.errors.append(f"{body.__name__}: {exc!r}")

        return run

    def _every_20_ms(self) -> Iterator[None]:
        next_at = time.monotonic()
        while not self.stop.is_set():
            yield
            next_at += 0.02
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _old_inserts(self) -> None:
        insert = sql.SQL(
            "INSERT INTO {}.llama_log (category, message, job_id, parent_job_id, job_name)"
            " VALUES ('CREATED', 'written by 0001-era code', %s, %s, 'late')"
        ).format(sql.Identifier(self.schema))
        rng = random.Random(1)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for number, _ in enumerate(self._every_20_ms()):
                parent = f"job-{rng.randrange(self.rows // ROWS_PER_JOB)}"
                began = time.monotonic()
                conn.execute(insert, (f"late-{number}", parent))
                if self.recording.is_set():
                    self.insert_waits.append(time.monotonic() - began)

    def _selects(self) -> None:
        select = sql.SQL("SELECT id, message FROM {}.llama_log WHERE job_id = %s").format(
            sql.Identifier(self.schema)
        )
        rng = random.Random(2)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for _ in self._every_20_ms():
                job = f"job-{rng.randrange(self.rows // ROWS_PER_JOB)}"
                began = time.monotonic()
                conn.execute(select, (job,)).fetchall()
                if self.recording.is_set():
                    self.select_waits.append(time.monotonic() - began)

    def _log_events(self) -> None:
        per_tick = self.events_per_second // 100  # one burst every 10 ms
        next_at = time.monotonic()
        while not self.stop.is_set():
            with self.logger.job("import-album"):
                for _ in range(20):
                    with self.logger.job("link-artist"):
                        for _ in range(per_tick):
                            self.logged += 1
                            self.logger.log(
                                Category.LINKED, "linked", entity=("artist", self.logged)
                            )
                    next_at += 0.01
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    if self.stop.is_set():
                        break

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.seconds = time.monotonic() - self.started
        self.flushed = self.logger.flush(timeout=120)
        self.stats = self.logger.stats()
        self.logger.close(timeout=30)


@contextmanager
def recording(load: Load) -> Iterator[None]:
    load.insert_waits.clear()
    load.select_waits.clear()
    load.recording.set()
    try:
        yield
    finally:
        load.recording.clear()


def describe(waits: list[float]) -> str:
    if not waits:
        return "none measured"
    ordered = sorted(waits)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"max {max(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.1f} ms over {len(ordered)}"


def copy_cost(dsn: str, rows: int, repeats: int) -> dict[str, float]:
    """Median seconds to COPY ``rows`` rows, with and without the 0004 trigger in the way."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    results: dict[str, list[float]] = {"with root, trigger on": [], "with root, trigger off": []}
    results["without root, trigger fires"] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, schema=schema)
        table = sql.SQL("{}.llama_log").format(sql.Identifier(schema))
        copy = sql.SQL(
            "COPY {} (category, message, job_id, parent_job_id, root_job_id, entity_type,"
            " entity_id) FROM STDIN"
        ).format(table)
        trigger = sql.SQL("ALTER TABLE {} {} TRIGGER llama_log_fill_root_job_id")

        def timed(with_root: bool) -> float:
            conn.execute(sql.SQL("TRUNCATE {}").format(table))
            began = time.perf_counter()
            with conn.cursor() as cur, cur.copy(copy) as out:
                for i in range(rows):
                    job = f"job-{i // 10}"
                    parent = None if i // 10 % 20 == 0 else f"job-{i // 10 - 1}"
                    root = f"job-{i // 200 * 20}" if with_root else None
                    out.write_row(("LINKED", "m", job, parent, root, "track", str(i)))
            return time.perf_counter() - began

        try:
            for _ in range(repeats):
                # Alternating, so that drift on a shared machine hits both alike.
                results["with root, trigger on"].append(timed(True))
                conn.execute(trigger.format(table, sql.SQL("DISABLE")))
                results["with root, trigger off"].append(timed(True))
                conn.execute(trigger.format(table, sql.SQL("ENABLE")))
                results["without root, trigger fires"].append(timed(False))
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return {name: statistics.median(times) for name, times in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: $LLAMALOG_DSN, else embedded)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the table (1M)")
    parser.add_argument("--events-per-second", type=int, default=5000, help="logger rate (5000)")
    parser.add_argument("--copy-rows", type=int, default=100_000, help="rows per COPY (100k)")
    args = parser.parse_args()

    print(
        "command: python benchmarks/bench_migrate.py "
        f"--rows {args.rows} --events-per-second {args.events_per_second}"
    )
    with database(args.dsn) as dsn:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            print(f"server: PostgreSQL {version[0] if version else '?'}")
            migrate(conn, schema=schema, target="0001")
            began = time.monotonic()
            load(conn, schema, args.rows)
            print(f"loaded {args.rows:,} rows at version 0001 in {time.monotonic() - began:.1f} s")
        try:
            with Load(dsn, schema, args.rows, args.events_per_second) as traffic:
                time.sleep(1.0)  # let the traffic settle before measuring
                with recording(traffic):
                    command = ["migrate", "--dsn", dsn, "--schema", schema]
                    began = time.monotonic()
                    done = subprocess.run(
                        [sys.executable, "-m", "llamalogger.cli", *command],
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    migrate_seconds = time.monotonic() - began
                migrate_inserts = describe(traffic.insert_waits)
                migrate_selects = describe(traffic.select_waits)
                with psycopg.connect(dsn, autocommit=True) as conn:
                    table = sql.SQL("{}.llama_log").format(sql.Identifier(schema))
                    # Back to the physical state the migrate started from (packed pages, no
                    # free space), so the UPDATE does not get the space the migrate freed.
                    conn.execute(sql.SQL("VACUUM (FULL, ANALYZE) {}").format(table))
                    with recording(traffic):
                        began = time.monotonic()
                        conn.execute(sql.SQL("UPDATE {} SET root_job_id = job_id").format(table))
                        update_seconds = time.monotonic() - began
                    update_inserts = describe(traffic.insert_waits)
            print(f"llamalog migrate exit status {done.returncode}; its output:")
            for line in done.stdout.splitlines():
                print(f"  {line}")
            if done.returncode:
                print(done.stderr)
            print(f"during migrate, INSERT by 0001-era code: {migrate_inserts}")
            print(f"during migrate, SELECT by job_id:       {migrate_selects}")
            stats = traffic.stats
            print(
                f"LlamaLogger at {args.events_per_second}/s "
                f"(reached {traffic.logged / traffic.seconds:,.0f}/s): logged {traffic.logged:,}, "
                f"written {stats['written']:,}, dropped {stats['dropped']}, "
                f"rejected {stats['rejected']}, spilled {stats['spilled']:,}, "
                f"retried {stats['retried']}, flushed {traffic.flushed}"
            )
            print(f"migrate total:            {migrate_seconds:.1f} s")
            print(f"full-table UPDATE:        {update_seconds:.1f} s")
            print(f"during UPDATE, INSERT by 0001-era code: {update_inserts}")
            print(f"ratio migrate / UPDATE:   {migrate_seconds / update_seconds:.2f}")
            for problem in traffic.errors:
                print(f"traffic error: {problem}")
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

        costs = copy_cost(dsn, args.copy_rows, repeats=3)
        base = costs["with root, trigger off"]
        print(f"COPY of {args.copy_rows:,} rows (median of 3):")
        for name, seconds in costs.items():
            print(f"  {name:<28} {seconds:.3f} s ({seconds / base:.2f}x trigger off)")
    print("figures from a shared machine are noisy: compare within one run only")


if __name__ == "__main__":
    main()
