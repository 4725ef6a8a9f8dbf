"""Misconfiguration is loud: ``check()`` raises at once, and the writer reports a cause that
waiting will not cure at ERROR, once per outage, while it keeps the events on disk."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from fixtures.database import count_rows, drop_schema
from fixtures.waiting import wait_until
from llamalogger import ConnectionFailed, LlamaLogger, SchemaNotMigrated
from llamalogger.schema import migrate

SECRET = "pw-never-shown-3141"


def _with(dsn: str, **changes: str) -> str:
    """``dsn`` with some of its parts changed (and a password nobody checks)."""
    params = conninfo_to_dict(dsn)
    params.update(changes)
    return make_conninfo("", **params)


def _check(dsn: str | None = None, timeout: float = 3, **options: object) -> None:
    """``check()`` of a logger made for it, closed afterwards whatever happens."""
    logger = LlamaLogger(dsn, spill_dir=False, exit_timeout=0.1, **options)  # type: ignore[arg-type]
    try:
        logger.check(timeout=timeout)
    finally:
        logger.close(timeout=0.1)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "llamalogger" and record.levelno >= logging.ERROR
    ]


class TestCheck:
    def test_a_host_that_does_not_resolve_raises_naming_the_fix(self, dsn: str) -> None:
        wrong = _with(dsn, host="no-such-host.invalid", password=SECRET)
        with pytest.raises(ConnectionFailed, match="fix the host name") as raised:
            _check(wrong)
        assert "no-such-host.invalid" in str(raised.value)
        assert SECRET not in str(raised.value)

    def test_an_unknown_database_raises_naming_the_fix(self, dsn: str) -> None:
        wrong = _with(dsn, dbname="no_such_database_llamalog", password=SECRET)
        with pytest.raises(ConnectionFailed, match="create the database") as raised:
            _check(wrong)
        assert "no_such_database_llamalog" in str(raised.value)
        assert SECRET not in str(raised.value)

    def test_a_refused_login_raises_naming_the_fix(self, dsn: str) -> None:
        """A role the server does not know: refused at login, which waiting will not cure."""
        wrong = _with(dsn, user="no_such_role_llamalog", password=SECRET)
        with pytest.raises(ConnectionFailed, match="create the role") as raised:
            _check(wrong)
        assert SECRET not in str(raised.value)

    def test_a_server_that_does_not_answer_raises(self) -> None:
        nobody = "postgresql://postgres@127.0.0.1:5521/nobody"  # nothing listens there
        with pytest.raises(ConnectionFailed, match="check that the server runs"):
            _check(nobody, timeout=2)

    def test_an_unmigrated_schema_raises_schema_not_migrated(
        self, dsn: str, schema_name: str
    ) -> None:
        with pytest.raises(SchemaNotMigrated, match="llamalog migrate"):
            _check(dsn, schema=schema_name)

    def test_an_older_schema_raises_schema_not_migrated(self, dsn: str, schema_name: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn, schema=schema_name, target="0001")
        with pytest.raises(SchemaNotMigrated, match="version 0001"):
            _check(dsn, schema=schema_name)

    def test_a_working_set_up_passes_and_logging_goes_on(self, dsn: str, schema: str) -> None:
        with LlamaLogger(dsn, schema=schema) as logger:
            logger.check()  # the default bound, 5.0 s
            logger.check(timeout=0.5)
            logger.created(("album", 1))
            assert logger.flush(timeout=10)
        assert count_rows(dsn, schema) == 1

    def test_a_logger_on_a_borrowed_pool_is_checked_through_the_pool(
        self, dsn: str, schema_name: str
    ) -> None:
        from psycopg_pool import ConnectionPool

        with (
            ConnectionPool(dsn, min_size=1, max_size=2, open=True) as pool,
            pytest.raises(SchemaNotMigrated),
        ):
            _check(pool=pool, schema=schema_name)


class TestReportedAtError:
    def test_an_unknown_database_is_one_error_naming_the_fix_and_events_wait_on_disk(
        self, dsn: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
    ) -> None:
        wrong = _with(dsn, dbname="no_such_database_llamalog")
        with caplog.at_level(logging.WARNING, logger="llamalogger"):
            logger = LlamaLogger(wrong, spill_dir=tmp_path / "spill", exit_timeout=1)
            try:
                for round_ in range(3):
                    for number in range(10):
                        logger.created(("track", f"{round_}-{number}"))
                    assert logger.flush(timeout=10)  # True: on disk, as documented
                assert logger.stats()["on_disk"] == 30
            finally:
                logger.close(timeout=1)
        errors = _errors(caplog)
        assert len(errors) == 1, errors
        assert "create the database" in errors[0]
        assert "no_such_database_llamalog" in errors[0]
        assert str(tmp_path / "spill") in errors[0]

    def test_an_unmigrated_schema_is_one_error_per_outage(
        self, dsn: str, schema_name: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
    ) -> None:
        """Unmigrated: one ERROR however many batches wait; migrated, the events are
        written; the schema gone again is a new outage with its own ERROR."""
        with caplog.at_level(logging.WARNING, logger="llamalogger"):
            logger = LlamaLogger(
                dsn, schema=schema_name, spill_dir=tmp_path / "spill", flush_interval=0.05
            )
            try:
                for number in range(20):
                    logger.created(("track", number))
                    if number % 5 == 4:
                        assert logger.flush(timeout=10)
                assert len(_errors(caplog)) == 1
                assert "llamalog migrate" in _errors(caplog)[0]
                with psycopg.connect(dsn, autocommit=True) as conn:
                    migrate(conn, schema=schema_name)
                assert wait_until(lambda: logger.stats()["written"] == 20)  # replayed
                drop_schema(dsn, schema_name)
                for number in range(21, 30):
                    logger.created(("track", number))
                    assert logger.flush(timeout=10)
                assert len(_errors(caplog)) == 2
            finally:
                logger.close(timeout=1)

    def test_a_server_that_is_down_is_a_warning_not_an_error(
        self, caplog: pytest.LogCaptureFixture, tmp_path: Path
    ) -> None:
        """A refused connection may heal by itself (a restart): it stays a warning."""
        nobody = "postgresql://postgres@127.0.0.1:5521/nobody"
        with caplog.at_level(logging.WARNING, logger="llamalogger"):
            logger = LlamaLogger(nobody, spill_dir=tmp_path / "spill", exit_timeout=1)
            try:
                logger.created(("album", 1))
                assert logger.flush(timeout=10)
            finally:
                logger.close(timeout=1)
        assert _errors(caplog) == []
        assert any("retrying" in record.getMessage() for record in caplog.records)
