"""The task-queue integrations take the process's logger by default, and resolve their
logger when they are set up: a worker without a database fails as it starts, once, with
a message that says what to do, instead of in every task."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workers"))

import harness

from llamalogger import ConfigurationError, LlamaLogger, configure, get_logger
from llamalogger._default import _forget


@pytest.fixture
def no_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No process logger yet, and no LLAMALOG_DSN to make one from."""
    monkeypatch.delenv("LLAMALOG_DSN", raising=False)
    _forget()
    yield
    _forget()


@pytest.fixture
def process_logger(dsn: str, schema: str) -> Iterator[LlamaLogger]:
    """The process's logger, configured for this test, closed afterwards."""
    _forget()
    logger = configure(dsn, schema=schema)
    yield logger
    _forget()
    logger.close(timeout=5)


@pytest.mark.usefixtures("no_database")
class TestWithoutADatabase:
    def test_celery_instrument_raises_at_once(self) -> None:
        celery = pytest.importorskip("celery")
        from llamalogger.integrations.celery import instrument

        app = celery.Celery("no-database", set_as_current=False)
        with pytest.raises(ConfigurationError, match=r"integrations\.celery: .*LLAMALOG_DSN"):
            instrument(app)
        with pytest.raises(ConfigurationError, match="LLAMALOG_DSN"):
            instrument(app, LlamaLogger)  # the factory form: called at once too

    def test_dramatiq_instrument_raises_at_once(self) -> None:
        pytest.importorskip("dramatiq")
        from dramatiq.brokers.stub import StubBroker

        from llamalogger.integrations.dramatiq import LlamaMiddleware, instrument

        broker = StubBroker()
        with pytest.raises(ConfigurationError, match=r"integrations\.dramatiq: .*LLAMALOG_DSN"):
            instrument(broker)
        assert not any(isinstance(m, LlamaMiddleware) for m in broker.middleware)

    def test_the_rq_worker_raises_when_it_is_made(self) -> None:
        pytest.importorskip("rq")
        from redis import Redis

        from llamalogger.integrations.rq import LlamaWorker

        with pytest.raises(ConfigurationError, match=r"LlamaWorker: .*LLAMALOG_DSN"):
            LlamaWorker(["proc-never-used"], connection=Redis.from_url(harness.REDIS))

    @pytest.mark.skipif(not harness.answers(6379), reason="RQ needs Redis on 6379")
    def test_the_documented_rq_command_stops_at_start_with_one_message(
        self, tmp_path: Path
    ) -> None:
        """``rq worker --worker-class ...LlamaWorker`` without LLAMALOG_DSN: it exits at
        once, before taking any job, and says what is missing."""
        pytest.importorskip("rq")
        queue = harness.run_id()
        environment = {k: v for k, v in os.environ.items() if k != "LLAMALOG_DSN"}
        done = subprocess.run(
            [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", harness.REDIS,
             "--worker-class", "llamalogger.integrations.rq.LlamaWorker", queue],
            check=False, env=environment, capture_output=True, text=True, timeout=60,
            cwd=tmp_path,
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode != 0
        assert output.count("Traceback") == 1, output[-2000:]  # one report, RQ's own
        assert "LlamaWorker: no database given" in output
        assert "LLAMALOG_DSN" in output


class TestTheDefaultIsTheProcessLogger:
    def test_celery(self, process_logger: LlamaLogger) -> None:
        celery = pytest.importorskip("celery")
        from llamalogger.integrations.celery import instrument

        app = celery.Celery("default-logger", set_as_current=False)
        instrumentation = instrument(app)
        assert instrumentation.logger is process_logger is get_logger()
        assert instrument(app) is instrumentation  # idempotent, with the default too
        with pytest.raises(ValueError, match="another logger"):
            instrument(app, process_logger)

    def test_dramatiq(self, process_logger: LlamaLogger) -> None:
        pytest.importorskip("dramatiq")
        from dramatiq.brokers.stub import StubBroker

        from llamalogger.integrations.dramatiq import instrument

        broker = StubBroker()
        assert instrument(broker).logger is process_logger
        assert instrument(broker) is instrument(broker)

    def test_rq(self, process_logger: LlamaLogger) -> None:
        pytest.importorskip("rq")
        from redis import Redis

        from llamalogger.integrations.rq import LlamaWorker

        worker = LlamaWorker(["proc-never-used"], connection=Redis.from_url(harness.REDIS))
        assert worker.llama_logger is process_logger

    def test_a_given_logger_and_a_factory_still_work(self, dsn: str, schema: str) -> None:
        celery = pytest.importorskip("celery")
        from llamalogger.integrations.celery import instrument

        with LlamaLogger(dsn, schema=schema) as given:
            app = celery.Celery("given-logger", set_as_current=False)
            assert instrument(app, given).logger is given
        made: list[LlamaLogger] = []

        def factory() -> LlamaLogger:
            made.append(LlamaLogger(dsn, schema=schema))
            return made[-1]

        app = celery.Celery("factory-logger", set_as_current=False)
        try:
            assert instrument(app, factory).logger is made[0]  # made at once
        finally:
            for logger in made:
                logger.close(timeout=5)


@pytest.mark.usefixtures("no_database")
def test_a_celery_worker_without_a_database_stops_at_start_and_never_says_ready(
    tmp_path: Path,
) -> None:
    """``celery worker`` for an app that calls ``instrument(app)`` without LLAMALOG_DSN: it
    exits at once with the message, before "ready" and before any task."""
    pytest.importorskip("celery")
    (tmp_path / "catalogue_app.py").write_text(
        "from celery import Celery\n"
        "from llamalogger.integrations.celery import instrument\n"
        "app = Celery('catalogue', broker='memory://')\n"
        "instrument(app)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "LLAMALOG_DSN"}
    environment["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "catalogue_app", "worker", "-P", "solo"],
        check=False, env=environment, capture_output=True, text=True, timeout=60,
        cwd=tmp_path,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "integrations.celery: no database given" in output, output[-2000:]
    assert "ready" not in output
