"""The ``llamalog`` command: ``migrate`` and ``demo``.

Every command takes ``--dsn`` (default ``$LLAMALOG_DSN``); without either it starts the
embedded PostgreSQL in its own data directory and says so. Errors print one line and
exit with status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

import psycopg

from ._errors import LlamaLogError
from ._migrate import migrate
from ._postgres import masked_conninfo

__all__ = ["main"]


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
            default=os.environ.get("LLAMALOG_SCHEMA") or "llamalog",
            help="schema holding llama_log (default: $LLAMALOG_SCHEMA or llamalog)",
        )
        return command

    migrate_cmd = add("migrate", "apply the schema migrations this package ships")
    migrate_cmd.add_argument("--target", help="stop after this version (e.g. 0001)")
    demo = add("demo", "log a simulated album import and print its job tree")
    demo.add_argument("--tracks", type=int, default=2000, help="tracks on the album (2000)")
    return parser


@contextlib.contextmanager
def _database(dsn: str | None) -> Iterator[str]:
    """The DSN to use: ``--dsn``, ``$LLAMALOG_DSN``, or a started embedded server."""
    dsn = dsn or os.environ.get("LLAMALOG_DSN") or None
    if dsn is not None:
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


def _cmd_migrate(args: argparse.Namespace, dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        result = migrate(conn, schema=args.schema, target=args.target)
    for migration in result.applied:
        print(f"applied {migration.version} {migration.name}")
    if result.backfill is not None:
        print(result.backfill)
    if not result.applied:
        print(f"schema {args.schema} is up to date (version {result.version})")
    return 0


def _cmd_demo(args: argparse.Namespace, dsn: str) -> int:
    from ._demo import run_demo
    from ._tree_text import render_tree

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
    return 0 if result.flushed else 1


_COMMANDS = {"migrate": _cmd_migrate, "demo": _cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with _database(args.dsn) as dsn:
            return _COMMANDS[args.command](args, dsn)
    except (LlamaLogError, psycopg.Error, OSError, RuntimeError, subprocess.SubprocessError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if args.dsn:
            message = message.replace(args.dsn, masked_conninfo(args.dsn))
        print(f"llamalog: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
