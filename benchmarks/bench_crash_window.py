"""How much a kill -9 loses: the events logged but not yet committed when a worker dies.

    python benchmarks/bench_crash_window.py [--dsn DSN] [--rate 20000] [--runs 5]

A forked child logs at a steady rate, publishing the number of events it has logged in
shared memory; the parent kills it with SIGKILL after a random moment, then counts the
rows that reached the table. What is lost is what was queued or in an uncommitted
batch: about one flush interval of events. Everything a flush() had confirmed survives
(the test suite checks that part).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import statistics
import time
import uuid
from multiprocessing.sharedctypes import Synchronized

import psycopg
from _support import scratch_schema
from psycopg import sql

from llamalogger import LlamaLogger


def worker(dsn: str, schema: str, run: str, rate: int, logged: Synchronized[int]) -> None:
    logger = LlamaLogger(dsn, schema=schema)
    interval = 1.0 / rate
    started = time.perf_counter()
    with logger.job("crashing-worker"):
        for number in range(10**9):
            # Paced: event n is due at started + n * interval.
            delay = started + number * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            logger.created(("track", number), run=run)
            logged.value = number + 1


def one_run(dsn: str, schema: str, rate: int, seconds: float) -> tuple[int, int]:
    context = multiprocessing.get_context("fork")
    logged = context.Value("q", 0, lock=False)
    run = uuid.uuid4().hex
    child = context.Process(target=worker, args=(dsn, schema, run, rate, logged))
    child.start()
    time.sleep(seconds)
    os.kill(child.pid or 0, signal.SIGKILL)
    child.join()
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.llama_log WHERE details->>'run' = %s").format(
                sql.Identifier(schema)
            ),
            (run,),
        ).fetchone()
    return int(logged.value), int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--rate", type=int, default=20_000, help="events per second")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with scratch_schema(args.dsn) as (dsn, schema, version):
        print(f"PostgreSQL {version}")
        print(f"kill -9 of a worker logging {args.rate:,} events/s "
              f"(the default flush_interval and batch_size), {args.runs} runs")  # fmt: skip
        windows = []
        rng = random.Random(3)
        for _ in range(args.runs):
            logged, stored = one_run(dsn, schema, args.rate, rng.uniform(1.5, 3.0))
            lost = logged - stored
            windows.append(lost / args.rate)
            print(f"  logged {logged:7,}  stored {stored:7,}  lost {lost:6,}  "
                  f"= {lost / args.rate * 1000:6.0f} ms of events")  # fmt: skip
        print(
            f"loss window: median {statistics.median(windows) * 1000:.0f} ms, "
            f"max {max(windows) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
