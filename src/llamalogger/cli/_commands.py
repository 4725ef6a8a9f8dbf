"""One function per ``llamalog`` subcommand: each takes the parsed arguments and a DSN.

They reach the database through :mod:`llamalogger.schema` (migrations, versions, the
backfill) and :mod:`llamalogger.queries` (everything they read), never with SQL of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from .. import queries, schema
from .._errors import LlamaLogError, SchemaNotMigrated
from ._render import render_event, render_tree

__all__ = ["COMMANDS", "NothingFound"]


class NothingFound(LlamaLogError):
    """A query the user asked for found nothing (unknown root, entity without events)."""


@contextlib.contextmanager
def _migrated(dsn: str, name: str) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """An autocommit connection to a schema at the newest version, and that version."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn, schema.require_current(conn, name)


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str, ensure_ascii=False)


def migrate_command(args: argparse.Namespace, dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if args.dry_run:
            print(schema.plan_migration(conn, schema=args.schema, target=args.target))
            return 0
        # Progress goes to standard error, so standard output stays the report.
        result = schema.migrate(
            conn,
            schema=args.schema,
            target=args.target,
            lock_timeout=args.lock_timeout,
            lock_retries=args.lock_retries,
            wait=args.wait,
            batch_seconds=args.batch_seconds,
            progress=schema.ProgressDisplay(),
        )
    for migration in result.applied:
        print(f"applied {migration.version} {migration.name}")
    if result.backfill is not None:
        print(result.backfill)
    if not result.applied:
        print(f"schema {args.schema} is up to date (version {result.version})")
    return 0


def backfill_command(args: argparse.Namespace, dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not schema.backfill_available(conn, args.schema):
            raise SchemaNotMigrated(
                f"schema {args.schema!r} has no root_job_id yet: run `llamalog migrate`"
            )
        report = schema.backfill_root_job_id(
            conn,
            schema=args.schema,
            batch_seconds=args.batch_seconds,
            progress=schema.ProgressDisplay(),
        )
    print(report)
    return 0


def status_command(args: argparse.Namespace, dsn: str) -> int:
    with _migrated(dsn, args.schema) as (conn, version):
        counts = queries.status(conn, schema=args.schema)
        last = queries.recent_events(conn, limit=args.last, schema=args.schema)
    print(f"schema {args.schema}: version {version} (this llamalog: {schema.LATEST_VERSION})")
    by_category = ", ".join(f"{category} {count}" for category, count in counts.by_category)
    print(f"events: {counts.events}" + (f" ({by_category})" if by_category else ""))
    print(f"root jobs: {counts.root_jobs}")
    if last:
        print(f"last {len(last)} events:")
        for row in last:
            print("  " + render_event(row))
    return 0


def tree_command(args: argparse.Namespace, dsn: str) -> int:
    with _migrated(dsn, args.schema) as (conn, _):
        tree = queries.job_tree(conn, args.root_job_id, schema=args.schema)
    if tree is None:
        raise NothingFound(f"no events with root_job_id {args.root_job_id!r}")
    if args.json:
        print(json.dumps(tree.to_dict(), indent=2, ensure_ascii=False))
    else:
        for line in render_tree(tree, max_children=args.max_children):
            print(line)
    return 0


def history_command(args: argparse.Namespace, dsn: str) -> int:
    with _migrated(dsn, args.schema) as (conn, _):
        rows = queries.entity_history(conn, args.entity_type, args.entity_id, schema=args.schema)
    if not rows:
        raise NothingFound(f"no events about {args.entity_type} {args.entity_id}")
    for row in rows:
        print(_json_line(row) if args.json else render_event(row))
    return 0


def tail_command(args: argparse.Namespace, dsn: str) -> int:
    with _migrated(dsn, args.schema) as (conn, _):
        rows = queries.recent_events(
            conn, limit=args.last, root_job_id=args.root, schema=args.schema
        )
        last_id = rows[-1]["id"] if rows else 0
        for row in rows:
            print(render_event(row), flush=True)
        while not args.no_follow:
            time.sleep(args.interval)
            rows = queries.recent_events(
                conn, limit=1000, root_job_id=args.root, after_id=last_id, schema=args.schema
            )
            for row in rows:
                print(render_event(row), flush=True)
                last_id = row["id"]
    return 0


def demo_command(args: argparse.Namespace, dsn: str) -> int:
    from ._demo import run_demo  # the demo's imports are the logger's: only when asked for

    if args.tracks < 1:
        raise LlamaLogError("--tracks must be at least 1")
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.migrate(conn, schema=args.schema)
    result = run_demo(dsn, schema=args.schema, tracks=args.tracks)
    print(f"import {result.root_job_id}: job tree from root_job_id\n")
    for line in render_tree(result.tree):
        print(line)
    jobs = sum(1 for _ in result.tree.walk())
    print(
        f"\n{result.events} events in {jobs} jobs written in {result.seconds:.2f} s "
        f"from the first log call until flush() returned: "
        f"{result.events_per_second:,.0f} events/s"
        + ("" if result.flushed else " (flush timed out!)")
    )
    print(f"see it again with: llamalog tree {result.root_job_id}")
    return 0 if result.flushed else 1


COMMANDS: dict[str, Callable[[argparse.Namespace, str], int]] = {
    "migrate": migrate_command,
    "backfill": backfill_command,
    "status": status_command,
    "tree": tree_command,
    "history": history_command,
    "tail": tail_command,
    "demo": demo_command,
}
