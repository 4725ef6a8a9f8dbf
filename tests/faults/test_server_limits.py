"""The server's own limits are not outages: a ``statement_timeout`` or ``lock_timeout`` set
for the logger's role, or a cancel the writer did not ask for, never stops writing, and a
database that turns read-only is named as the reason of the outage.

Each test gets a role of its own (``limited_role``) with the privileges a logger needs, so
that the limits set for it reach no other session.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from fixtures.database import count_rows
from fixtures.waiting import wait_until
from llamalogger import LlamaLogger

# ~2 KB of details per event, as in the report that found the trouble.
PAYLOAD = "x" * 2000


@pytest.fixture
def limited_role(dsn: str, schema: str) -> Iterator[str]:
    """A login role that may write the test's schema; its settings are the test's to set."""
    role = f"llamalog_limited_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            )
        )
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            )
        )
    try:
        yield role
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _set_for_role(dsn: str, role: str, setting: str, value: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} SET {} = {}").format(
                sql.Identifier(role), sql.Identifier(setting), sql.Literal(value)
            )
        )


def _writer_backend(dsn: str, application: str) -> int | None:
    """The pid of the writer's session, named by its application_name, while it runs a COPY."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND state = 'active' AND query LIKE 'COPY%%'",
            [application],
        ).fetchone()
    return None if row is None else int(row[0])


def test_a_50ms_statement_timeout_for_the_role_does_not_stop_writing(
    dsn: str, schema: str, limited_role: str, tmp_path: Path
) -> None:
    """100,000 events of ~2 KB through a role whose statement_timeout is 50 ms: every COPY
    takes longer than that, and all of them are written, none kept on disk."""
    _set_for_role(dsn, limited_role, "statement_timeout", "50ms")
    events = 100_000
    with LlamaLogger(
        make_conninfo(dsn, user=limited_role), schema=schema, spill_dir=tmp_path
    ) as logger:
        for number in range(events):
            logger.created(("track", number), payload=PAYLOAD)
        assert logger.flush(timeout=120)
        stats = logger.stats()
    assert (stats["written"], stats["on_disk"], stats["dropped"]) == (events, 0, 0), stats
    assert count_rows(dsn, schema) == events


def test_a_lock_timeout_for_the_role_does_not_send_writes_to_disk(
    dsn: str, schema: str, limited_role: str, tmp_path: Path
) -> None:
    """While another session holds a lock on llama_log for longer than the role's 50 ms
    lock_timeout, the writer waits for it instead of taking the timeout for an outage."""
    _set_for_role(dsn, limited_role, "lock_timeout", "50ms")
    with LlamaLogger(
        make_conninfo(dsn, user=limited_role), schema=schema, spill_dir=tmp_path
    ) as logger:
        logger.created(("track", 0))
        assert logger.flush(timeout=10)  # connected, schema checked
        with psycopg.connect(dsn) as holder:
            holder.execute(
                sql.SQL("LOCK TABLE {}.llama_log IN SHARE MODE").format(sql.Identifier(schema))
            )
            logger.created(("track", 1))
            assert not logger.flush(timeout=0.5)  # waiting for the lock
            holder.rollback()
        assert logger.flush(timeout=10)
        stats = logger.stats()
    assert (stats["written"], stats["spilled"]) == (2, 0), stats


def test_a_cancel_the_writer_did_not_ask_for_halves_the_batch_and_writing_goes_on(
    dsn: str, schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator's pg_cancel_backend during a big COPY is not an outage: the writer
    writes the batch in halves, keeps nothing on disk, and says so once."""
    application = f"llamalog_cancelled_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    events = 40_000
    logger = LlamaLogger(
        dsn,
        schema=schema,
        spill_dir=tmp_path,
        connect_options={"application_name": application},
        flush_interval=2.0,  # one big batch, not many small ones
    )
    cancelled: list[int] = []

    def cancel_the_copy() -> None:
        if wait_until(lambda: _writer_backend(dsn, application) is not None, 60):
            pid = _writer_backend(dsn, application)
            with psycopg.connect(dsn) as conn:
                conn.execute("SELECT pg_cancel_backend(%s)", [pid])
            cancelled.append(pid or 0)

    canceller = threading.Thread(target=cancel_the_copy, daemon=True)
    with caplog.at_level(logging.WARNING, logger="llamalogger"), logger:
        canceller.start()
        for number in range(events):
            logger.created(("track", number), payload=PAYLOAD)
        assert logger.flush(timeout=120)
        canceller.join(60)
        stats = logger.stats()
    assert cancelled, "the writer's COPY was never seen running"
    assert (stats["written"], stats["spilled"], stats["dropped"]) == (events, 0, 0), stats
    assert count_rows(dsn, schema) == events
    warnings = [r.getMessage() for r in caplog.records if "smaller" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "pg_cancel_backend" in warnings[0]


def _terminate(dsn: str, application: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [application],
        )


def test_a_database_turned_read_only_is_named_as_the_reason(
    dsn: str, schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer's backend is terminated while the database is read-only: the warnings
    say first that the connection was lost, then that the database is read-only; once it
    takes writes again every event is stored."""
    application = f"llamalog_ro_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = psycopg.connect(dsn, autocommit=True)  # opened before: it stays writable
    dbname = admin.info.dbname
    logger = LlamaLogger(
        dsn,
        schema=schema,
        spill_dir=tmp_path,
        connect_options={"application_name": application},
        flush_interval=0.05,
    )
    read_only = sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}")
    try:
        with caplog.at_level(logging.WARNING, logger="llamalogger"), logger:
            logger.created(("track", 0))
            assert logger.flush(timeout=10)
            admin.execute(read_only.format(sql.Identifier(dbname), sql.SQL("on")))
            _terminate(dsn, application)
            logger.created(("track", 1))
            assert logger.flush(timeout=10)  # on disk
            assert wait_until(lambda: "read-only" in caplog.text, 10), caplog.text
            admin.execute(read_only.format(sql.Identifier(dbname), sql.SQL("off")))
            assert wait_until(lambda: logger.stats()["on_disk"] == 0, 20), logger.stats()
    finally:
        admin.execute(
            sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(
                sql.Identifier(dbname)
            )
        )
        admin.close()
    messages = [record.getMessage() for record in caplog.records]
    lost = next(i for i, text in enumerate(messages) if "cannot write" in text)
    named = next(i for i, text in enumerate(messages) if "read-only" in text)
    assert lost < named, messages
    assert count_rows(dsn, schema) == 2
