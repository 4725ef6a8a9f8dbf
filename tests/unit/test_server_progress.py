"""The watch of the server's progress when it cannot watch: no progress shown, said once, and
not tried again at every look. What it sees on a real server is tested by
tests/faults/test_slow_server.py, which fails without it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from fixtures.waiting import wait_until
from llamalogger._pipeline.progress import ServerProgress


class RefusedConnections:
    """Stands in for a server out of connection slots: every connection is refused."""

    def __init__(self) -> None:
        self.tries = 0

    @contextlib.contextmanager
    def __call__(self, timeout: float) -> Iterator[Any]:
        self.tries += 1
        raise psycopg.OperationalError("sorry, too many clients already")
        yield  # never reached: a generator, as a connection's context is


def test_a_watch_that_cannot_connect_shows_no_progress_says_so_once_and_waits_to_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connect = RefusedConnections()
    watch = ServerProgress(connect)

    def reports() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "cannot see the server's progress" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="llamalogger"):
        assert watch.seen(1234) == 0
        assert wait_until(lambda: len(reports()) == 1, 5)  # said by the watching thread
        for _ in range(50):  # callers look twenty times a second
            assert watch.seen(1234) == 0
    watch.close()
    assert connect.tries == 1  # not again within the retry interval
    assert len(reports()) == 1
    assert "too many clients" not in reports()[0].getMessage()  # the type only, never the text


def test_no_write_in_progress_starts_no_watch() -> None:
    connect = RefusedConnections()
    watch = ServerProgress(connect)
    assert watch.seen(None) == 0
    watch.close()
    assert connect.tries == 0
