"""The Celery integration's publishing side and set-up, without a worker or a database.

Messages go to kombu's in-memory transport; a receiver connected after the integration's
captures the headers each message is published with.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("celery")

from celery import Celery, signals

from llamalogger import JobContext, LlamaLogger
from llamalogger._context import JobScope
from llamalogger.integrations.celery import instrument
from llamalogger.testing import capture_events


def another_logger() -> LlamaLogger:
    raise AssertionError("never called")


@pytest.fixture
def logger() -> Iterator[LlamaLogger]:
    """The logger ``instrument`` makes at once, in memory; publishing logs nothing to it."""
    with capture_events() as capture:
        yield capture.logger
        assert capture.logger.flush(timeout=5)
        assert capture.events == []


@pytest.fixture
def app(logger: LlamaLogger) -> Celery:
    app = Celery("unit", broker="memory://", set_as_current=False)
    instrument(app, logger)
    return app


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    captured: list[dict[str, Any]] = []

    def capture(headers: dict[str, Any], **_: Any) -> None:
        captured.append(dict(headers))

    signals.before_task_publish.connect(capture, weak=False, dispatch_uid="unit-capture")
    try:
        yield captured
    finally:
        signals.before_task_publish.disconnect(dispatch_uid="unit-capture")


def ours(headers: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in headers.items() if key.startswith("llamalog-")}


def test_a_message_published_in_a_job_carries_the_job(
    app: Celery, published: list[dict[str, Any]]
) -> None:
    with JobScope("import-album", None, None) as job:
        app.send_task("covers.fetch", (1,))
    assert ours(published[-1]) == job.to_headers()


def test_outside_any_job_nothing_is_added(app: Celery, published: list[dict[str, Any]]) -> None:
    app.send_task("covers.fetch", (1,))
    assert ours(published[-1]) == {}


def test_headers_the_caller_set_are_never_overwritten(
    app: Celery, published: list[dict[str, Any]]
) -> None:
    chosen = JobContext(job_id="chosen-parent").to_headers()
    with JobScope("import-album", None, None):
        app.send_task("covers.fetch", (1,), headers=chosen)
    assert ours(published[-1]) == chosen


def test_a_republish_of_the_running_job_carries_its_parent_not_itself(
    app: Celery, published: list[dict[str, Any]]
) -> None:
    """retry() and replace() publish the running task's id again: it stays the same job."""
    with JobScope("outer", None, None) as outer, JobScope("task", "task-id", None) as task:
        assert task.parent_job_id == outer.job_id
        app.send_task("covers.fetch", (1,), task_id="task-id")
    assert ours(published[-1]) == {
        "llamalog-job-id": outer.job_id,
        "llamalog-root-job-id": outer.root_job_id,
    }
    with JobScope("root-task", "root-id", None):
        app.send_task("covers.fetch", (1,), task_id="root-id")
    assert ours(published[-1]) == {}


def test_instrument_is_idempotent(app: Celery, logger: LlamaLogger) -> None:
    receivers = len(signals.task_prerun.receivers)
    assert instrument(app, logger) is instrument(app, logger)
    assert len(signals.task_prerun.receivers) == receivers


def test_another_logger_for_an_instrumented_app_is_refused(app: Celery) -> None:
    with pytest.raises(ValueError, match="already instrumented"):
        instrument(app, another_logger)


def test_a_logger_must_be_a_logger_or_a_factory() -> None:
    with pytest.raises(TypeError, match="LlamaLogger or a callable"):
        instrument(Celery("bad", set_as_current=False), "postgresql://db")  # type: ignore[arg-type]
