"""The ``llamalog`` command: migrate, backfill, status, tree, history, tail and demo.

Every command takes ``--dsn`` (default ``$LLAMALOG_DSN``); without either it starts the
embedded PostgreSQL in its own data directory and says so. Errors print one line and
exit with status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from . import queries
from ._conninfo import check_conninfo, dsn_from_env, schema_from_env, scrub
from ._errors import LlamaLogError, SchemaNotMigrated
from ._migrate import (
    LATEST_VERSION,
    backfill_root_job_id,
    current_version,
    migrate,
    plan_migration,
)
from ._progress import ProgressDisplay
from ._render import render_event, render_tree

__all__ = ["main"]


class _NothingFound(LlamaLogError):
    """A query the user asked for found nothing (unknown root, entity without events)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamalog", description="Job-aware catalogue event logging into PostgreSQL."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "--dsn", help="PostgreSQL DSN (default: $LLAMALOG_DSN, else the embedded server)"
        )
        command.add_argument(
            "--schema",
            default=schema_from_env(),
            help="schema holding llama_log (default: $LLAMALOG_SCHEMA or llamalog)",
        )
        return command

    migrate_cmd = add("migrate", "apply the schema migrations this package ships")
    migrate_cmd.add_argument("--target", help="stop after this version (e.g. 0001)")
    migrate_cmd.add_argument(
        "--dry-run",
        action="store_true",
        help="print each step that would run, the lock it takes and the rows it touches",
    )
    migrate_cmd.add_argument(
        "--lock-timeout",
        type=float,
        default=0.2,
        help="seconds a DDL step waits for its lock before it backs off and retries (0.2)",
    )
    migrate_cmd.add_argument(
        "--lock-retries", type=int, default=30, help="retries of a step whose lock was busy (30)"
    )
    migrate_cmd.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help="seconds to wait for another migrate of the same schema to finish (60)",
    )
    migrate_cmd.add_argument(
        "--batch-seconds",
        type=float,
        default=0.2,
        help="target duration of one backfill batch, each its own transaction (0.2)",
    )

    backfill = add("backfill", "fill root_job_id wherever it is still NULL; safe at any time")
    backfill.add_argument(
        "--batch-seconds",
        type=float,
        default=0.2,
        help="target duration of one batch, each its own transaction (0.2)",
    )

    status = add("status", "schema version, row counts and the last events")
    status.add_argument("-n", "--last", type=int, default=5, help="events to show (5)")

    tree = add("tree", "the job tree of one import, with counts and durations")
    tree.add_argument("root_job_id", metavar="ROOT_JOB_ID")
    tree.add_argument("--json", action="store_true", help="print the tree as JSON")
    tree.add_argument(
        "--max-children", type=int, default=20, help="siblings shown before summarising (20)"
    )

    history = add("history", "every event about one entity, as subject or linked object")
    history.add_argument("entity_type", metavar="TYPE")
    history.add_argument("entity_id", metavar="ID")
    history.add_argument("--json", action="store_true", help="print events as JSON lines")

    tail = add("tail", "print the last events, then follow new ones (Ctrl-C stops)")
    tail.add_argument("--root", help="only events of this root job")
    tail.add_argument("-n", "--last", type=int, default=10, help="events to show first (10)")
    tail.add_argument("--no-follow", action="store_true", help="print and exit")
    tail.add_argument("--interval", type=float, default=0.5, help="seconds between polls (0.5)")

    demo = add("demo", "log a simulated album import and print its job tree")
    demo.add_argument("--tracks", type=int, default=2000, help="tracks on the album (2000)")
    return parser


@contextlib.contextmanager
def _database(dsn: str | None) -> Iterator[str]:
    """The DSN to use: ``--dsn``, ``$LLAMALOG_DSN``, or a started embedded server."""
    dsn = dsn_from_env(dsn)
    if dsn is not None:
        check_conninfo(dsn)
        yield dsn
        return
    from .embedded import EmbeddedPostgres

    with EmbeddedPostgres() as server:
        print(
            f"llamalog: no --dsn or LLAMALOG_DSN given; using the embedded PostgreSQL "
            f"in {server.data_dir}",
            file=sys.stderr,
        )
        yield server.dsn


@contextlib.contextmanager
def _migrated(dsn: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a schema that is migrated, else ``SchemaNotMigrated``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        version = current_version(conn, schema)
        if version is None:
            raise SchemaNotMigrated(
                f"schema {schema!r} is not migrated: run `llamalog migrate` first"
            )
        if version < LATEST_VERSION:
            raise SchemaNotMigrated(
                f"schema {schema!r} is at version {version}, this llamalog needs "
                f"{LATEST_VERSION}: run `llamalog migrate`"
            )
        yield conn


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str, ensure_ascii=False)


def _cmd_migrate(args: argparse.Namespace, dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if args.dry_run:
            print(plan_migration(conn, schema=args.schema, target=args.target))
            return 0
        # Progress goes to standard error, so standard output stays the report.
        result = migrate(
            conn,
            schema=args.schema,
            target=args.target,
            lock_timeout=args.lock_timeout,
            lock_retries=args.lock_retries,
            wait=args.wait,
            batch_seconds=args.batch_seconds,
            progress=ProgressDisplay(),
        )
    for migration in result.applied:
        print(f"applied {migration.version} {migration.name}")
    if result.backfill is not None:
        print(result.backfill)
    if not result.applied:
        print(f"schema {args.schema} is up to date (version {result.version})")
    return 0


def _cmd_backfill(args: argparse.Namespace, dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        version = current_version(conn, args.schema)
        # The column exists from 0002 on; the backfill needs nothing newer.
        if version is None or version < "0002":
            raise SchemaNotMigrated(
                f"schema {args.schema!r} has no root_job_id yet: run `llamalog migrate`"
            )
        report = backfill_root_job_id(
            conn, schema=args.schema, batch_seconds=args.batch_seconds, progress=ProgressDisplay()
        )
    print(report)
    return 0


def _cmd_status(args: argparse.Namespace, dsn: str) -> int:
    with _migrated(dsn, args.schema) as conn:
        table = sql.SQL("{}.llama_log").format(sql.Identifier(args.schema))
        counts = conn.execute(
            sql.SQL("SELECT category::text, count(*) FROM {} GROUP BY 1 ORDER BY 2 DESC, 1").format(
                table
            )
        ).fetchall()
        roots = conn.execute(
            sql.SQL("SELECT count(DISTINCT root_job_id) FROM {}").format(table)
        ).fetchone()
        last = queries.recent_events(conn, limit=args.last, schema=args.schema)
        version = current_version(conn, args.schema)
    total = sum(count for _, count in counts)
    print(f"schema {args.schema}: version {version} (this llamalog: {LATEST_VERSION})")
    by_category = ", ".join(f"{category} {count}" for category, count in counts)
    print(f"events: {total}" + (f" ({by_category})" if counts else ""))
    print(f"root jobs: {roots[0] if roots else 0}")
    if last:
        print(f"last {len(last)} events:")
        for row in last:
            print("  " + render_event(row))
    return 0


def _cmd_tree(args: argparse.Namespace, dsn: str) -> int:
    with _migrated(dsn, args.schema) as conn:
        tree = queries.job_tree(conn, args.root_job_id, schema=args.schema)
    if tree is None:
        raise _NothingFound(f"no events with root_job_id {args.root_job_id!r}")
    if args.json:
        print(json.dumps(tree.to_dict(), indent=2, ensure_ascii=False))
    else:
        for line in render_tree(tree, max_children=args.max_children):
            print(line)
    return 0


def _cmd_history(args: argparse.Namespace, dsn: str) -> int:
    with _migrated(dsn, args.schema) as conn:
        rows = queries.entity_history(conn, args.entity_type, args.entity_id, schema=args.schema)
    if not rows:
        raise _NothingFound(f"no events about {args.entity_type} {args.entity_id}")
    for row in rows:
        print(_json_line(row) if args.json else render_event(row))
    return 0


def _cmd_tail(args: argparse.Namespace, dsn: str) -> int:
    with _migrated(dsn, args.schema) as conn:
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


def _cmd_demo(args: argparse.Namespace, dsn: str) -> int:
    from ._demo import run_demo

    if args.tracks < 1:
        raise LlamaLogError("--tracks must be at least 1")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, schema=args.schema)
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


_COMMANDS: dict[str, Callable[[argparse.Namespace, str], int]] = {
    "migrate": _cmd_migrate,
    "backfill": _cmd_backfill,
    "status": _cmd_status,
    "tree": _cmd_tree,
    "history": _cmd_history,
    "tail": _cmd_tail,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with _database(args.dsn) as dsn:
            return _COMMANDS[args.command](args, dsn)
    except BrokenPipeError:  # `llamalog tail | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps exit-time flush quiet
        return 0
    except (
        LlamaLogError,
        psycopg.Error,
        OSError,
        RuntimeError,
        subprocess.SubprocessError,
    ) as exc:
        text = str(exc).strip()
        message = text.splitlines()[0] if text else type(exc).__name__
        given = dsn_from_env(args.dsn)
        if given:
            message = scrub(message, given)
        print(f"llamalog: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
