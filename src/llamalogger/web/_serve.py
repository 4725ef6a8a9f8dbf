"""Running the view with uvicorn: the address rule, the token, the URL to open."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import signal
import sys
import threading
import webbrowser
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from .._conninfo import DEFAULT_SCHEMA
from .._errors import ConfigurationError
from ._app import create_app
from ._security import LOOPBACK_HOSTS

__all__ = ["TOKEN_ENV", "is_loopback", "serve"]

#: The environment variable a token can come from instead of ``--token``.
TOKEN_ENV = "LLAMALOG_WEB_TOKEN"  # noqa: S105 - the variable's name


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    if shown in ("0.0.0.0", "[::]"):  # noqa: S104 - naming the wildcard, not binding it
        shown = "127.0.0.1"
    query = f"/?token={quote(token, safe='')}" if token else "/"
    return f"http://{shown}:{port}{query}"


def serve(
    dsn: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    open_browser: bool = False,
) -> None:
    """Serve the view until interrupted. A host other than a loopback address needs a
    ``token`` (else ``$LLAMALOG_WEB_TOKEN``): refused with :class:`ConfigurationError`."""
    import uvicorn

    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"listening on {host} makes the view reachable from other machines: give a token "
            f"with --token or ${TOKEN_ENV} (e.g. {secrets.token_urlsafe(24)})"
        )
    hosts = {*LOOPBACK_HOSTS, host.strip("[]").lower()}
    app = create_app(dsn, schema=schema, token=token, allowed_hosts=hosts)
    url = _url(host, port, token)
    print(f"llamalog: serving the web view on {url} (Ctrl-C stops)", file=sys.stderr, flush=True)
    if open_browser:
        webbrowser.open(url)
    # Warnings only: no access log, whose first line would carry the ?token= of a visit.
    config = uvicorn.Config(app, host=host.strip("[]"), port=port, log_level="warning")
    server = uvicorn.Server(config)
    with _hangup_stops(server):
        server.run()


@contextlib.contextmanager
def _hangup_stops(server: Any) -> Iterator[None]:
    """SIGHUP (a closed terminal) shuts the server down as SIGINT and SIGTERM do in
    uvicorn: gracefully, connections closed, then the command's own clean-up."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    previous = signal.signal(signal.SIGHUP, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
