"""The web view's ASGI application: pages, JSON API, guard, and the database's lifetime."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

import psycopg
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from .._conninfo import DEFAULT_SCHEMA, scrub, validate_schema
from .._errors import SchemaNotMigrated
from ._api import api_routes, json_response
from ._database import ReadOnlyDatabase
from ._pages import page_routes
from ._security import LOOPBACK_HOSTS, Guard

__all__ = ["create_app"]

_log = logging.getLogger("llamalogger.web")


def create_app(
    dsn: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    token: str | None = None,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    connection_timeout: float = 10.0,
) -> Starlette:
    """The read-only web view of ``schema`` at ``dsn`` as an ASGI app.

    It connects when started (its lifespan), not here. ``token``: every request must
    carry it (see :mod:`._security`); without one, requests must name one of
    ``allowed_hosts`` (loopback names by default). ``connection_timeout``: seconds a
    request waits for a database connection before it is answered with 503.
    """
    validate_schema(schema)
    database = ReadOnlyDatabase(dsn, timeout=connection_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database.open()
        try:
            yield
        finally:
            database.close()

    def database_trouble(request: Request, exc: Exception) -> Response:
        # The message may quote the DSN's parts: scrubbed, and the password never shown.
        message = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", dsn)
        _log.warning("web view: database unavailable: %s", message or type(exc).__name__)
        if isinstance(exc, SchemaNotMigrated):
            return json_response({"error": message}, status_code=503)
        return json_response(
            {"error": f"the database is unavailable ({type(exc).__name__})"}, status_code=503
        )

    app = Starlette(
        routes=[*api_routes(), *page_routes()],
        lifespan=lifespan,
        exception_handlers={
            psycopg.OperationalError: database_trouble,
            PoolTimeout: database_trouble,
            SchemaNotMigrated: database_trouble,
        },
    )
    app.state.database = database
    app.state.schema = schema
    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts)
    return app
