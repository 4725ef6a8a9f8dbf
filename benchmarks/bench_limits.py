"""The server's limits and poolers: a role's statement_timeout, spill replay behind PgBouncer in
transaction mode, and how long close() takes in spill mode.

    python benchmarks/bench_limits.py [--dsn DSN] [--only timeout|pooler|close]

``timeout``: a role of its own with ``statement_timeout = '50ms'`` writes 100,000 events of
~2 KB (``--events``); reports the time until ``flush()`` returned, and where the events went.
``pooler``: 8 loggers behind Debian's ``pgbouncer`` (transaction pooling, 2 server
connections) spill through a 5 s network cut between them and the pooler, then replay;
reports how long the replay took, how many replays failed and whether every event is
stored once (needs the ``pgbouncer`` binary). ``close``: ``exit_timeout=2`` with spilling on
and 20,000 events of ~2 KB queued, the server refusing connections (a cut network) or not
answering (a stalled one); reports how long ``close()`` took and where the events went.

Without ``--dsn`` (or ``LLAMALOG_DSN``) it starts an embedded PostgreSQL. It reuses the test
suite's TCP proxy and PgBouncer launcher (``tests/``), so run it from a checkout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _support import database, scratch_schema

from faults.conftest import TcpProxy, upstream_of
from fixtures.pgbouncer import Bouncer
from llamalogger import LlamaLogger

PAYLOAD = "x" * 2000


def _count(dsn: str, schema: str) -> tuple[int, int]:
    """Rows stored, and distinct events among them (by their ``seq`` detail)."""
    query = sql.SQL("SELECT count(*), count(DISTINCT details->>'seq') FROM {}.llama_log").format(
        sql.Identifier(schema)
    )
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def bench_timeout(dsn: str, schema: str, events: int) -> str:
    role = f"bench_limited_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(role)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident)
        )
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {} TO {}").format(
                sql.Identifier(schema), ident
            )
        )
        conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '50ms'").format(ident))
    try:
        with LlamaLogger(
            make_conninfo(dsn, user=role), schema=schema, spill_dir=tempfile.mkdtemp()
        ) as logger:
            started = time.monotonic()
            for number in range(events):
                logger.created(("track", number), payload=PAYLOAD, seq=number)
            flushed = logger.flush(timeout=300)
            took = time.monotonic() - started
            stats = logger.stats()
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))
    stored, distinct = _count(dsn, schema)
    return (
        f"statement_timeout=50ms, {events:,} events of ~2 KB: flush() {flushed} after {took:.1f}s;"
        f" written {stats['written']:,}, spilled {stats['spilled']:,}, on disk"
        f" {stats['on_disk']:,}, dropped {stats['dropped']:,}; stored {stored:,}"
        f" ({distinct:,} distinct)"
    )


def bench_pooler(dsn: str, schema: str, loggers: int = 8, outage: float = 5.0) -> str:
    bouncer = Bouncer(dsn, pool_mode="transaction", pool_size=2)
    proxy = TcpProxy(upstream_of(bouncer.dsn))
    spill = Path(tempfile.mkdtemp())
    writers = [
        LlamaLogger(
            proxy.dsn_for(bouncer.dsn),
            schema=schema,
            spill_dir=spill / str(number),
            flush_interval=0.05,
        )
        for number in range(loggers)
    ]
    try:
        for writer in writers:
            writer.created(("album", 0), seq=f"before-{id(writer)}")
            writer.flush(timeout=10)
        proxy.cut()
        seq = 0
        ends = time.monotonic() + outage
        while time.monotonic() < ends:  # about 2,000 events/s in all, a file per round
            for writer in writers:
                for _ in range(25):
                    writer.created(("track", seq), seq=seq)
                    seq += 1
            time.sleep(0.1)
        for writer in writers:
            writer.flush(timeout=10)
        on_disk = sum(writer.stats()["on_disk"] for writer in writers)
        retried = sum(writer.stats()["retried"] for writer in writers)
        proxy.restore()
        back = time.monotonic()
        done = _wait(lambda: all(w.stats()["on_disk"] == 0 for w in writers), 90)
        took = time.monotonic() - back
        failed = sum(writer.stats()["retried"] for writer in writers) - retried
        left = sum(writer.stats()["on_disk"] for writer in writers)
    finally:
        for writer in writers:
            writer.close(timeout=5)
        proxy.close()
        bouncer.stop()
    stored, distinct = _count(dsn, schema)
    return (
        f"pgbouncer 1.x transaction mode, 2 server connections, {loggers} loggers,"
        f" {outage:g}s cut: {on_disk:,} events on disk; replay "
        f"{'finished' if done else 'NOT finished'} in {took:.1f}s ({left:,} left),"
        f" {failed} failed replay attempts; stored {stored:,} ({distinct:,} distinct)"
    )


def bench_close(dsn: str, schema: str, how: str, events: int = 20_000) -> str:
    proxy = TcpProxy(upstream_of(dsn))
    logger = LlamaLogger(
        proxy.dsn_for(dsn),
        schema=schema,
        spill_dir=tempfile.mkdtemp(),
        exit_timeout=2,
        flush_interval=0.05,
    )
    try:
        logger.created(("album", 0))
        logger.flush(timeout=10)
        proxy.cut() if how == "refused" else proxy.hold()
        for number in range(events):
            logger.created(("track", number), payload=PAYLOAD)
        started = time.monotonic()
        result = logger.close()
        took = time.monotonic() - started
    finally:
        proxy.close()
    stats = logger.stats()
    return (
        f"close(), exit_timeout=2, server {how}, {events:,} events of ~2 KB queued:"
        f" {took:.2f}s, returned {result}; on disk {stats['on_disk']:,},"
        f" dropped {stats['dropped']:,}, written {stats['written']:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--only", choices=["timeout", "pooler", "close"], action="append")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    chosen = args.only or ["timeout", "pooler", "close"]
    with database(args.dsn) as target:  # a schema of its own for each scenario
        if "timeout" in chosen:
            with scratch_schema(target) as (dsn, schema, version):
                print(f"PostgreSQL {version}")
                print(bench_timeout(dsn, schema, args.events))
        if "pooler" in chosen:
            with scratch_schema(target) as (dsn, schema, _):
                print(bench_pooler(dsn, schema))
        if "close" in chosen:
            with scratch_schema(target) as (dsn, schema, _):
                for how in ("refused", "stalled"):
                    for _ in range(3):
                        print(bench_close(dsn, schema, how))


if __name__ == "__main__":
    main()
