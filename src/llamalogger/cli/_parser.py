"""The ``llamalog`` command line: its subcommands and their options."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from .. import __version__
from .._conninfo import schema_from_env

__all__ = ["build_parser"]

_DEBUG_HELP = "print the traceback of an error as well as its one-line message"


def _int_from(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int of at least ``minimum``, else a usage error naming it."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


_COUNT = _int_from(0)
_AT_LEAST_ONE = _int_from(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamalog", description="Job-aware catalogue event logging into PostgreSQL."
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"llamalog {__version__}")
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
        # Also after the command; SUPPRESS keeps a --debug given before it.
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
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
        type=_seconds,
        default=0.2,
        help="seconds a DDL step waits for its lock before it backs off and retries (0.2)",
    )
    migrate_cmd.add_argument(
        "--lock-retries", type=_COUNT, default=30, help="retries of a step whose lock was busy (30)"
    )
    migrate_cmd.add_argument(
        "--wait",
        type=_seconds,
        default=60.0,
        help="seconds to wait for another migrate of the same schema to finish (60)",
    )
    migrate_cmd.add_argument(
        "--batch-seconds",
        type=_seconds,
        default=0.2,
        help="target duration of one backfill batch, each its own transaction (0.2)",
    )

    backfill = add("backfill", "fill root_job_id wherever it is still NULL; safe at any time")
    backfill.add_argument(
        "--batch-seconds",
        type=_seconds,
        default=0.2,
        help="target duration of one batch, each its own transaction (0.2)",
    )

    status = add("status", "schema version, row counts and the last events")
    status.add_argument("-n", "--last", type=_COUNT, default=5, help="events to show (5)")

    tree = add("tree", "the job tree of one import, with counts and durations")
    tree.add_argument("root_job_id", metavar="ROOT_JOB_ID")
    tree.add_argument("--json", action="store_true", help="print the tree as JSON")
    tree.add_argument(
        "--max-children",
        type=_COUNT,
        default=20,
        help="siblings shown before summarising (20)",
    )

    history = add("history", "every event about one entity, as subject or linked object")
    history.add_argument("entity_type", metavar="TYPE")
    history.add_argument("entity_id", metavar="ID")
    history.add_argument("--json", action="store_true", help="print events as JSON lines")

    tail = add("tail", "print the last events, then follow new ones (Ctrl-C stops)")
    tail.add_argument("--root", help="only events of this root job")
    tail.add_argument("-n", "--last", type=_COUNT, default=10, help="events to show first (10)")
    tail.add_argument("--no-follow", action="store_true", help="print and exit")
    tail.add_argument("--interval", type=_seconds, default=0.5, help="seconds between polls (0.5)")

    demo = add("demo", "log a simulated album import and print its job tree")
    demo.add_argument(
        "--tracks", type=_AT_LEAST_ONE, default=2000, help="tracks on the album (2000)"
    )
    return parser
