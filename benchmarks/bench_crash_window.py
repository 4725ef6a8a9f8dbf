"""How much a kill -9 loses: the events logged but not yet committed when a worker dies.

    python benchmarks/bench_crash_window.py                      # embedded PostgreSQL
    python benchmarks/bench_crash_window.py --server machine     # 127.0.0.1:5432
    python benchmarks/bench_crash_window.py --rate 200 --runs 5  # one rate

A forked child creates a logger with the default settings and logs at a steady rate,
publishing the number of events it has logged in shared memory; the parent kills it with
SIGKILL at a moment drawn from a seeded random generator (so the runs are repeatable), then
counts the child's rows in the table: lost = logged - stored (distinct events). Everything a
flush() had confirmed survives (the test suite checks that part); this measures the rest.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shlex
import signal
import statistics
import sys
import time
import uuid
from multiprocessing.sharedctypes import Synchronized

from _support import Server, fault_server, migrated_schema, stored_rows

from llamalogger import LlamaLogger

RATES = (200, 2_000, 20_000)


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
            logger.created(("track", number), run=run, n=number)
            logged.value = number + 1


def one_run(server: Server, schema: str, rate: int, seconds: float) -> tuple[int, int, int]:
    """(logged, stored, duplicates) for one worker killed after ``seconds``."""
    context = multiprocessing.get_context("fork")  # the bench holds no logger to inherit
    logged = context.Value("q", 0, lock=False)
    run = uuid.uuid4().hex
    child = context.Process(target=worker, args=(server.dsn, schema, run, rate, logged))
    child.start()
    time.sleep(seconds)
    os.kill(child.pid or 0, signal.SIGKILL)
    child.join()
    rows, distinct = stored_rows(server, schema, run)
    return int(logged.value), distinct, rows - distinct


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--server", choices=["embedded", "machine"], default="embedded")
    parser.add_argument(
        "--rate", type=int, action="append", help="events per second (repeatable; default: all)"
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rates = args.rate or list(RATES)
    command = " ".join(shlex.quote(part) for part in ["python", *sys.argv])
    with fault_server(args.server) as server, migrated_schema(server) as schema:
        print(f"PostgreSQL {server.version} ({server.kind})")
        print(f"command: {command}")
        rng = random.Random(3)
        summary = []
        for rate in rates:
            print(
                f"kill -9 of a worker logging {rate:,} events/s (default settings), "
                f"{args.runs} runs, killed 1.5-3.0 s after its start"
            )
            losses = []
            for _ in range(args.runs):
                logged, stored, dups = one_run(server, schema, rate, rng.uniform(1.5, 3.0))
                lost = logged - stored
                losses.append(lost)
                print(
                    f"  logged {logged:7,}  stored {stored:7,}  lost {lost:6,}  "
                    f"= {lost / rate * 1000:6.0f} ms of events  duplicates {dups}"
                )
            median, worst = statistics.median(losses), max(losses)
            print(
                f"  lost: median {median:,.0f} events ({median / rate * 1000:.0f} ms), "
                f"worst {worst:,} ({worst / rate * 1000:.0f} ms)"
            )
            summary.append((rate, median, worst))
        print("\nrate (events/s)  median lost       worst lost")
        for rate, median, worst in summary:
            print(
                f"{rate:>15,}  {median:>6,.0f} = {median / rate * 1000:>4.0f} ms  "
                f"{worst:>6,} = {worst / rate * 1000:>4.0f} ms"
            )


if __name__ == "__main__":
    main()
