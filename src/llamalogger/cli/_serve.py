"""``llamalog serve`` and ``llamalog tree --html``: the commands of the web view.

The view itself lives in :mod:`llamalogger.web` (the ``web`` extra); these functions
check the set-up, then hand over.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import psycopg

from .. import schema
from .._errors import ConfigurationError
from ..queries import JobNode

__all__ = ["add_serve_arguments", "serve_command", "write_tree_html"]

_MISSING_EXTRA = "the web view needs its extra: pip install 'llamalogger[web]'"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"a port is from 1 to 65535, not {value}")
    return value


def add_serve_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (127.0.0.1); any other needs a token",
    )
    command.add_argument("--port", type=_port, default=8765, help="port to listen on (8765)")
    command.add_argument("--open", action="store_true", help="open the view in a browser")
    command.add_argument(
        "--token",
        help="a secret every request must carry (default: $LLAMALOG_WEB_TOKEN); "
        "required on an address other than loopback",
    )


def _web() -> Any:
    try:
        from .. import web
    except ImportError as exc:
        raise ConfigurationError(f"{_MISSING_EXTRA} ({exc.name} is missing)") from exc
    return web


def serve_command(args: argparse.Namespace, dsn: str) -> int:
    web = _web()
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.require_current(conn, args.schema)  # say "run migrate" now, not per request
    web.serve(
        dsn,
        schema=args.schema,
        host=args.host,
        port=args.port,
        token=args.token,
        open_browser=args.open,
    )
    return 0


def write_tree_html(tree: JobNode, asked: str, path: str) -> None:
    """Write the self-contained page of ``tree`` to ``path`` (``-``: standard output)."""
    from ..web import tree_html  # needs no extra: only the package's own assets

    page = tree_html(tree, asked=asked)
    if path == "-":
        print(page)
    else:
        Path(path).write_text(page, encoding="utf-8")
