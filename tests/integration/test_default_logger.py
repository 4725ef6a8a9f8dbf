"""One logger per process: ``llamalogger.get_logger()`` and ``llamalogger.configure()``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

import llamalogger
from fixtures.database import count_rows
from llamalogger import ConfigurationError, LlamaLogger, configure, get_logger
from llamalogger._default import _forget


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No process logger yet, no LLAMALOG_* in the environment; the one made is closed."""
    monkeypatch.delenv("LLAMALOG_DSN", raising=False)
    monkeypatch.delenv("LLAMALOG_SCHEMA", raising=False)
    _forget()
    yield
    made = llamalogger._default._logger
    _forget()
    if made is not None:
        made.close(timeout=5)


@pytest.mark.usefixtures("fresh")
class TestGetLogger:
    def test_it_is_made_once_from_the_environment(
        self, dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("LLAMALOG_DSN", dsn)
        monkeypatch.setenv("LLAMALOG_SCHEMA", schema)
        logger = get_logger()
        assert isinstance(logger, LlamaLogger)
        assert get_logger() is logger
        assert logger.schema == schema
        logger.created(("album", 1))
        assert logger.flush(timeout=10)
        assert count_rows(dsn, schema) == 1

    def test_without_a_dsn_it_raises_and_a_later_call_can_succeed(
        self, dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with pytest.raises(ConfigurationError, match="LLAMALOG_DSN"):
            get_logger()
        monkeypatch.setenv("LLAMALOG_DSN", dsn)
        monkeypatch.setenv("LLAMALOG_SCHEMA", schema)
        assert get_logger() is get_logger()

    def test_both_are_exported(self) -> None:
        assert {"get_logger", "configure"} <= set(llamalogger.__all__)


@pytest.mark.usefixtures("fresh")
class TestConfigure:
    def test_configure_makes_the_logger_get_logger_returns(self, dsn: str, schema: str) -> None:
        logger = configure(dsn, schema=schema, flush_interval=0.5)
        assert get_logger() is logger
        assert logger.schema == schema

    def test_the_same_call_again_returns_the_same_logger(self, dsn: str, schema: str) -> None:
        assert configure(dsn, schema=schema) is configure(dsn, schema=schema)

    def test_other_arguments_raise_instead_of_replacing_it(self, dsn: str, schema: str) -> None:
        logger = configure(dsn, schema=schema)
        with pytest.raises(ConfigurationError, match="exists already"):
            configure(dsn, schema=schema, batch_size=10)
        assert get_logger() is logger

    def test_after_get_logger_it_raises(
        self, dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("LLAMALOG_DSN", dsn)
        monkeypatch.setenv("LLAMALOG_SCHEMA", schema)
        get_logger()
        with pytest.raises(ConfigurationError, match=r"made by get_logger\(\)"):
            configure(dsn, schema=schema)

    def test_a_bad_option_raises_and_leaves_no_logger(self, dsn: str, schema: str) -> None:
        with pytest.raises(ConfigurationError, match="batch_size"):
            configure(dsn, schema=schema, batch_size=0)
        assert configure(dsn, schema=schema) is get_logger()

    @pytest.mark.skipif(sys.platform != "linux", reason="fork() is Linux-only here")
    def test_a_forked_child_gets_the_same_logger_and_its_events_arrive(
        self, dsn: str, schema: str
    ) -> None:
        logger = configure(dsn, schema=schema, flush_interval=60)
        pid = os.fork()
        if pid == 0:  # the child: the same object, its writer started afresh
            code = 1
            try:
                if get_logger() is logger:
                    with logger.job("in-child"):
                        for number in range(100):
                            get_logger().created(("track", f"child-{number}"))
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert count_rows(dsn, schema, "entity_id LIKE %s", ("child-%",)) == 100
