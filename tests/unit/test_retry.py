"""``Outage``: one warning when writes start failing, one each time the reason changes to
one not reported yet in this outage, one when they work again."""

from __future__ import annotations

import logging

import psycopg
import psycopg.errors
import pytest

from llamalogger._pipeline.retry import Outage
from llamalogger._pipeline.sink import ServerLimit, reason

LOST = psycopg.errors.AdminShutdown("terminating connection due to administrator command")
READ_ONLY = psycopg.errors.ReadOnlySqlTransaction("cannot execute COPY in a read-only transaction")
FULL = psycopg.OperationalError("connection failed: FATAL:  sorry, too many clients already")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_change_of_reason_during_an_outage_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Lost, then read-only, then lost and read-only again: two warnings, the second
    naming the read-only database; success ends the outage and forgets its reasons."""
    outage = Outage("on disk")
    with caplog.at_level(logging.WARNING, logger="llamalogger"):
        for exc in (LOST, READ_ONLY, LOST, READ_ONLY, READ_ONLY):
            outage.failed(exc)
        assert len(_warnings(caplog)) == 2
        assert "the server cannot be reached" in _warnings(caplog)[0]
        assert "now because the database is read-only" in _warnings(caplog)[1]
        outage.succeeded()
        outage.failed(READ_ONLY)
    assert "reached the database again" in _warnings(caplog)[2]
    assert "(the database is read-only)" in _warnings(caplog)[3]


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (LOST, "the server cannot be reached"),
        (READ_ONLY, "the database is read-only"),
        (FULL, "the server has too many clients"),
        (psycopg.errors.TooManyConnections("too many"), "the server has too many clients"),
        (
            psycopg.OperationalError('password authentication failed for user "u"'),
            "authentication failed",
        ),
        (
            psycopg.OperationalError("connection failed: Connection refused"),
            "the server cannot be reached",
        ),
        (
            ServerLimit("statement_timeout", psycopg.errors.QueryCanceled("cancelled")),
            "statement_timeout cancels writes",
        ),
        (psycopg.errors.QueryCanceled("user request"), "the write was cancelled"),
    ],
)
def test_the_reason_of_a_failed_write_in_a_few_words(exc: Exception, words: str) -> None:
    assert reason(exc) == words
