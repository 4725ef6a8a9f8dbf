"""Fixtures for the property tests: one schema and one real logger per test module and server.

Hypothesis runs many examples inside one test call, and function-scoped fixtures are not
reset between examples. So each module gets its own migrated schema and one ``LlamaLogger``
writing into it (through the real background writer), and each example selects its own rows
(by a run id in ``details``) or clears the table before it starts.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from fixtures.database import migrated_schema
from llamalogger import LlamaLogger


@pytest.fixture(scope="module")
def module_schema(dsn: str) -> Iterator[str]:
    """A schema migrated to the newest version, shared by one test module, dropped afterwards."""
    with migrated_schema(dsn, "p") as name:
        yield name


@pytest.fixture(scope="module")
def module_logger(dsn: str, module_schema: str) -> Iterator[LlamaLogger]:
    """One logger for the whole module; closed (after a final flush) before the schema goes."""
    logger = LlamaLogger(dsn, schema=module_schema)
    try:
        yield logger
    finally:
        assert logger.close(timeout=30)


@pytest.fixture(scope="module")
def module_conn(dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection for reading rows back and running the backfill."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection
