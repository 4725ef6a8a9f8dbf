"""The ``llamalog`` command line: its subcommands and their options."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
from collections.abc import Callable

from .. import __version__
from .._conninfo import schema_from_env
from ._demo import DEFAULT_TRACKS
from ._serve import add_serve_arguments

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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _window(text: str) -> dt.timedelta | None:
    """An argparse type: ``90s``, ``30m``, ``24h``, ``7d``, ``2w`` back from now; ``all``: no
    limit (``None``)."""
    if text.strip().lower() == "all":
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"not a time window: {text!r} (use e.g. 90s, 30m, 24h, 7d, 2w, or all)"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0 or seconds > 100 * 365 * 86400:
        raise argparse.ArgumentTypeError(f"must be a positive window of at most 100 years: {text}")
    return dt.timedelta(seconds=seconds)


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

    status = add(
        "status", "schema version, row counts, spill files waiting per target, the last events"
    )
    status.add_argument("-n", "--last", type=_COUNT, default=5, help="events to show (5)")

    runs = add("runs", "root jobs (runs), newest first: status, duration, events, failures")
    runs.add_argument(
        "--since",
        type=_window,
        default=dt.timedelta(hours=24),
        help="runs active in this window back from now: 90s, 30m, 24h, 7d, 2w or all (24h)",
    )
    runs.add_argument(
        "--failed", action="store_true", help="only runs with a failed job in their tree"
    )
    runs.add_argument("--name", help="only runs whose root job has this name")
    runs.add_argument("-n", "--last", type=_AT_LEAST_ONE, default=20, help="runs to show (20)")
    runs.add_argument("--json", action="store_true", help="print the runs as JSON")

    tree = add(
        "tree",
        "the whole job tree holding a job (any job of it; that job marked): each job's "
        "status, duration, events and failure",
    )
    tree.add_argument("job_id", metavar="JOB_ID")
    tree.add_argument("--json", action="store_true", help="print the tree as JSON")
    tree.add_argument(
        "--failed", action="store_true", help="only the branches that hold a failed job"
    )
    tree.add_argument(
        "--max-children",
        type=_COUNT,
        default=20,
        help="siblings shown before summarising (20)",
    )
    tree.add_argument(
        "--html",
        metavar="FILE",
        help="write the run's timeline and tree as one self-contained HTML file (-: stdout)",
    )

    show = add("show", "one job: its record, parent and root, attempts, events and its traceback")
    show.add_argument("job_id", metavar="JOB_ID")
    show.add_argument("--events", type=_COUNT, default=50, help="events to show (50)")
    show.add_argument("--json", action="store_true", help="print the job as JSON")

    history = add("history", "every event about one entity, as subject or linked object")
    history.add_argument("entity_type", metavar="TYPE")
    history.add_argument("entity_id", metavar="ID")
    history.add_argument("--json", action="store_true", help="print events as JSON lines")

    tail = add("tail", "print the last events, then follow new ones (Ctrl-C stops)")
    tail.add_argument(
        "--root",
        help="only events of this root job (one nothing names yet is said and followed anyway)",
    )
    tail.add_argument("-n", "--last", type=_COUNT, default=10, help="events to show first (10)")
    tail.add_argument("--no-follow", action="store_true", help="print and exit")
    tail.add_argument("--interval", type=_seconds, default=0.5, help="seconds between polls (0.5)")

    add_serve_arguments(add("serve", "a read-only web view of runs, trees, entities and the tail"))

    demo = add(
        "demo",
        "log a simulated album import (one failure, one retry) and print its job tree",
    )
    demo.add_argument(
        "--tracks",
        type=_AT_LEAST_ONE,
        default=DEFAULT_TRACKS,
        help=f"tracks on the album ({DEFAULT_TRACKS}); e.g. 2000 for a benchmark-sized run",
    )
    return parser
