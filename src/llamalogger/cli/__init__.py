"""The ``llamalog`` command: migrate, backfill, status, runs, tree, show, history, tail, demo
and serve.

Every command takes ``--dsn`` (default ``$LLAMALOG_DSN``); without either it starts the
embedded PostgreSQL in its own data directory and says so. The errors a user can cause or
fix (server unreachable, schema not migrated, nothing found, bad arguments, any
:class:`~llamalogger.LlamaLogError`) print one line and exit with status 1; ``--debug`` adds
their traceback. Anything else is a bug and prints its traceback. A DSN's password never
appears in either.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence

import psycopg

from .._conninfo import check_conninfo, dsn_from_env, scrub
from .._errors import EmbeddedUnavailable, LlamaLogError
from ._commands import COMMANDS
from ._escape import visible
from ._parser import build_parser

__all__ = ["main"]

# What a user can cause or fix; everything else is reported as the bug it is. SchemaNotMigrated,
# MigrationError, ConfigurationError (bad option values) and NothingFound are LlamaLogErrors.
_EXPECTED = (LlamaLogError, psycopg.OperationalError)


@contextlib.contextmanager
def _database(dsn: str | None) -> Iterator[str]:
    """The DSN to use: ``--dsn``, ``$LLAMALOG_DSN``, or a started embedded server."""
    dsn = dsn_from_env(dsn)
    if dsn is not None:
        check_conninfo(dsn)
        yield dsn
        return
    from ..embedded import EmbeddedPostgres

    try:
        server = EmbeddedPostgres()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        # The wheel reports a server that would not start (a full disk, a port, initdb) in
        # these; for the user it is the same as a missing extra: no embedded server.
        raise EmbeddedUnavailable(f"the embedded PostgreSQL did not start: {exc}") from exc
    with server:
        print(
            f"llamalog: no --dsn or LLAMALOG_DSN given; using the embedded PostgreSQL "
            f"in {server.data_dir}",
            file=sys.stderr,
        )
        yield server.dsn


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``llamalog`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    with _terminated_like_ctrl_c():
        return _run(args)


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is, but with the exit status of that signal
    (143, 129), as a shell reports a command the signal ended."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.status = 128 + signum


@contextlib.contextmanager
def _terminated_like_ctrl_c() -> Iterator[None]:
    """SIGTERM (``kill``, a service manager) and SIGHUP (a closed terminal or SSH session)
    end a command the way Ctrl-C does: blocks are left, so an embedded server the command
    started is stopped instead of running on."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: object) -> None:
        raise _Terminated(signum)

    handled = (signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, interrupt) for signum in handled}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(args: argparse.Namespace) -> int:
    given = dsn_from_env(args.dsn)
    try:
        with _database(args.dsn) as dsn:
            return COMMANDS[args.command](args, dsn)
    except BrokenPipeError:  # `llamalog tail | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps exit-time flush quiet
        return 0
    except KeyboardInterrupt as exc:
        return exc.status if isinstance(exc, _Terminated) else 130
    except _EXPECTED as exc:
        if args.debug:
            _print_traceback(exc, given)
        text = str(exc).strip()
        message = text.splitlines()[0] if text else type(exc).__name__
        # Messages can quote ids and names from the database: escaped like all output.
        print(f"llamalog: error: {visible(_scrubbed(message, given))}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: its whole traceback, scrubbed, then status 1
        _print_traceback(exc, given)
        return 1


def _scrubbed(text: str, given: str | None) -> str:
    return scrub(text, given) if given else text


def _print_traceback(exc: BaseException, given: str | None) -> None:
    text = _scrubbed("".join(traceback.format_exception(exc)), given)
    # Escaped line by line: an exception's message may quote a hostile id or name.
    print("\n".join(visible(line) for line in text.split("\n")), end="", file=sys.stderr)
