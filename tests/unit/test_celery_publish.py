"""The Celery integration's publishing side and set-up, without a worker or a database.

Messages go to kombu's in-memory transport; a receiver connected after the integration's
captures the headers each message is published with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("celery")

from celery import Celery, signals

from llamalogger import JobContext, LlamaLogger
from llamalogger._context import JobScope
from llamalogger.integrations.celery import _parent_of, instrument
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


def test_a_republish_of_the_running_job_carries_the_job_whole(
    app: Celery, published: list[dict[str, Any]]
) -> None:
    """retry() and replace() publish the running task's id again: the message carries that
    job with its parent and root, headers from_headers takes (its parent alone, deep in a
    tree, would name a root without a parent); the worker reads them as the job's place."""
    with (
        JobScope("outer", None, None) as outer,
        JobScope("album", None, None) as album,
        JobScope("task", "task-id", None) as task,
    ):
        assert (task.parent_job_id, task.root_job_id) == (album.job_id, outer.job_id)
        app.send_task("covers.fetch", (1,), task_id="task-id")
    headers = ours(published[-1])
    assert headers == task.to_headers()
    assert JobContext.from_headers(headers) == task
    request = {"id": "task-id", **headers}
    assert _parent_of(request) == JobContext(job_id=album.job_id, root_job_id=outer.job_id)
    with JobScope("root-task", "root-id", None) as root:
        app.send_task("covers.fetch", (1,), task_id="root-id")
    assert ours(published[-1]) == root.to_headers()
    assert _parent_of({"id": "root-id", **ours(published[-1])}) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"llamalog-job-id": "P", "llamalog-parent-job-id": "P"},  # its own parent
        {"llamalog-job-id": "P", "llamalog-root-job-id": "R"},  # a root without a parent
        {"llamalog-job-id": "x" * 101},  # no valid job id
    ],
    ids=["own-parent", "root-without-parent", "long-id"],
)
def test_refused_headers_count_as_none_with_one_warning(
    headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The task keeps Celery's own parent (or becomes a root); one warning says why."""
    request = {"id": "T", "parent_id": "C", "root_id": "CR", **headers}
    with caplog.at_level(logging.WARNING, logger="llamalogger.integrations.celery"):
        assert _parent_of(request) == JobContext(job_id="C", root_job_id="CR")
        assert _parent_of({"id": "T", **headers}) is None
    warnings = [r for r in caplog.records if r.name == "llamalogger.integrations.celery"]
    assert len(warnings) == 2  # one per message
    assert all("'T'" in r.getMessage() and "refused" in r.getMessage() for r in warnings)


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
