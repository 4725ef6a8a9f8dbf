"""Memory during a database outage: bounded by the queue, or by nothing at all with spilling.

    python benchmarks/bench_outage_memory.py [--rate 20000] [--seconds 30]

Starts an embedded PostgreSQL, stops it, and logs at a steady rate for the whole
outage, sampling this process's resident memory (VmRSS) every second: once with the
default in-memory queue (100,000 events; beyond it events are dropped and counted), once
with a spill directory (batches go to disk as they come). Then it starts the server
again and reports how long writing everything took.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from pathlib import Path

from llamalogger import LlamaLogger
from llamalogger.embedded import EmbeddedPostgres
from llamalogger.schema import migrate


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def outage(server: EmbeddedPostgres, rate: int, seconds: float, spill: Path | None) -> None:
    gc.collect()
    # No spill directory: the in-memory queue alone (spilling is on by default).
    logger = LlamaLogger(
        server.dsn, schema="bench", spill_dir=spill if spill is not None else False
    )
    with logger.job("warm-up"):
        logger.created(("track", -1))
    logger.flush(timeout=10)
    baseline = rss_mib()
    server.stop_server()
    samples = []
    interval = 1.0 / rate
    started = time.perf_counter()
    next_sample = started + 1
    number = 0
    with logger.job("import-during-outage"):
        while (now := time.perf_counter()) < started + seconds:
            due = int((now - started) / interval)
            while number < due:
                logger.created(("track", number), source="bench", position=number)
                number += 1
            if now >= next_sample:
                samples.append(rss_mib() - baseline)
                next_sample += 1
            time.sleep(0.001)
    stats = logger.stats()
    label = "spill_dir" if spill else "in-memory queue (100,000)"
    on_disk = sum(f.stat().st_size for f in spill.iterdir()) / 2**20 if spill else 0.0
    print(f"{label}: {number:,} events in {seconds:.0f} s; RSS growth max "
          f"{max(samples):.1f} MiB, last {samples[-1]:.1f} MiB; queued "
          f"{stats['queue_depth']:,}, dropped {stats['dropped']:,}, spilled "
          f"{stats['spilled']:,} ({on_disk:.1f} MiB on disk)")  # fmt: skip
    server.start_server()
    started = time.perf_counter()
    flushed = logger.flush(timeout=300)
    # flush() counts events on disk as delivered: wait for the replay too (bounded).
    while logger.stats()["on_disk"] and time.perf_counter() - started < 300:
        time.sleep(0.05)
    print(f"  server back: everything kept written in {time.perf_counter() - started:.1f} s "
          f"(flush() returned {flushed}); written {logger.stats()['written']:,}")  # fmt: skip
    logger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with EmbeddedPostgres(ephemeral=True) as server:
        import psycopg

        with psycopg.connect(server.dsn, autocommit=True) as conn:
            migrate(conn, schema="bench")
        print(f"outage of {args.seconds:.0f} s while logging {args.rate:,} events/s")
        outage(server, args.rate, args.seconds, None)
        spill = Path(tempfile.mkdtemp(prefix="llamalog-spill-"))
        try:
            outage(server, args.rate, args.seconds, spill)
        finally:
            shutil.rmtree(spill, ignore_errors=True)


if __name__ == "__main__":
    main()
