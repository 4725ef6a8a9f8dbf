"""Process life: interpreter exit without close(), and fork()."""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time

import pytest

from fixtures.database import count_rows
from llamalogger import LlamaLogger


def test_interpreter_exit_without_close_writes_everything(dsn: str, schema: str) -> None:
    """A script that never calls close() or flush() still gets every event stored."""
    script = textwrap.dedent(
        f"""
        from llamalogger import LlamaLogger
        logger = LlamaLogger({dsn!r}, schema={schema!r}, flush_interval=60)
        with logger.job("short-lived-script"):
            for number in range(2500):
                logger.created(("track", number))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert count_rows(dsn, schema) == 2500


def _child_logs(logger: LlamaLogger, queue: multiprocessing.Queue[object]) -> None:
    with logger.job("in-child") as job:
        for number in range(50):
            logger.created(("track", f"child-{number}"))
    closed = logger.close(timeout=10)
    queue.put((job.root_job_id, closed, logger.stats()))


@pytest.mark.skipif(sys.platform != "linux", reason="the fork start method is Linux-only here")
def test_forked_child_logs_through_its_own_writer_and_nothing_is_written_twice(
    dsn: str, schema: str
) -> None:
    """Records queued in the parent at fork time are written once, by the parent."""
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[object] = context.Queue()
    # A long interval keeps the parent's records queued while the child is forked.
    with LlamaLogger(dsn, schema=schema, flush_interval=60) as logger:
        with logger.job("in-parent"):
            for number in range(100):
                logger.created(("track", f"parent-{number}"))
        assert logger.stats()["queue_depth"] == 101  # the events and the job's record
        child = context.Process(target=_child_logs, args=(logger, queue))
        child.start()
        root, child_closed, child_stats = queue.get(timeout=60)  # type: ignore[misc]
        child.join(timeout=60)
        assert child.exitcode == 0
        assert logger.flush(timeout=10)
    assert child_closed
    assert child_stats["written"] == 51  # type: ignore[index]  # and its job's record
    assert count_rows(dsn, schema, "entity_id LIKE %s", ("parent-%",)) == 100
    assert count_rows(dsn, schema, "entity_id LIKE %s", ("child-%",)) == 50
    assert count_rows(dsn, schema, "root_job_id = %s", (root,)) == 50


@pytest.mark.skipif(sys.platform != "linux", reason="fork() is Linux-only here")
def test_forked_child_that_ends_with_os_exit_after_its_job_loses_nothing(
    dsn: str, schema: str
) -> None:
    """Pools that recycle a child after each task end it with os._exit, skipping atexit;
    in a forked child the end of the outermost job flushes, so the task's events are in."""
    with LlamaLogger(dsn, schema=schema, flush_interval=60) as logger:
        pid = os.fork()
        if pid == 0:  # the child: one task, then os._exit like a recycled pool worker
            code = 1
            try:
                with logger.job("one-task"):
                    for number in range(300):
                        logger.created(("track", f"task-{number}"))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert count_rows(dsn, schema, "entity_id LIKE %s", ("task-%",)) == 300


def _log_outside_any_job(logger: LlamaLogger) -> None:
    for number in range(200):
        logger.created(("track", f"mp-{number}"))


@pytest.mark.skipif(sys.platform != "linux", reason="the fork start method is Linux-only here")
def test_multiprocessing_child_flushes_at_exit_even_outside_a_job(dsn: str, schema: str) -> None:
    """multiprocessing ends children with os._exit; the writer closes in its finalizer."""
    with LlamaLogger(dsn, schema=schema, flush_interval=60) as logger:
        child = multiprocessing.get_context("fork").Process(
            target=_log_outside_any_job, args=(logger,)
        )
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
    assert count_rows(dsn, schema, "entity_id LIKE %s", ("mp-%",)) == 200


def test_flush_on_outer_job_exit_can_be_switched_on_in_the_parent(dsn: str, schema: str) -> None:
    with LlamaLogger(dsn, schema=schema, flush_interval=60, flush_on_outer_job_exit=True) as logger:
        with logger.job("import"):
            logger.created(("album", 1))
            assert logger.stats()["written"] == 0  # still queued inside the job
        assert logger.stats()["written"] == 2  # the job's end waited for the event and record


@pytest.mark.skipif(sys.platform != "linux", reason="fork() is Linux-only here")
def test_a_forked_childs_job_end_delivers_every_logger_of_the_process(
    dsn: str, schema: str
) -> None:
    """The job is entered through logger A, the events go through a module-level logger B:
    the end of the outermost job delivers B's events too, before os._exit."""
    with (
        LlamaLogger(dsn, schema=schema, flush_interval=60) as enters,
        LlamaLogger(dsn, schema=schema, flush_interval=60) as logs,
    ):
        pid = os.fork()
        if pid == 0:  # the child: one task, then os._exit like a recycled pool worker
            code = 1
            try:
                with enters.job("one-task"):
                    for number in range(500):
                        logs.created(("track", f"b-{number}"))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert count_rows(dsn, schema, "entity_id LIKE %s", ("b-%",)) == 500


# Nothing listens here (a port of the range kept for private clusters): connections are refused.
_NOBODY = "postgresql://postgres@127.0.0.1:5521/nobody"


@pytest.mark.timing
def test_a_task_end_waits_for_all_loggers_side_by_side_under_one_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three loggers that cannot deliver (no server, no spill directory) hold the end of a
    task for one bound (block_timeout + exit_timeout), not three, and each says so."""
    loggers = [
        LlamaLogger(_NOBODY, spill_dir=False, block_timeout=1.5, exit_timeout=1.5) for _ in range(3)
    ]
    try:
        for logger in loggers:
            logger.created(("album", 1))
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="llamalogger"):
            loggers[0].task_ended()
        waited = time.monotonic() - started
        # One bound is 3 s; one after the other would be 9 s: room for a loaded machine.
        assert 3.0 <= waited < 7.0
        undelivered = [r for r in caplog.records if "not delivered" in r.getMessage()]
        assert len(undelivered) == 3
        assert all(logger.stats()["queued"] == 1 for logger in loggers)
    finally:
        for logger in loggers:
            logger.close(timeout=0.1)


def test_interpreter_exit_delivers_every_logger_of_the_process(dsn: str, schema: str) -> None:
    """A script with two loggers, neither closed nor flushed: both are written at exit."""
    script = textwrap.dedent(
        f"""
        from llamalogger import LlamaLogger
        first = LlamaLogger({dsn!r}, schema={schema!r}, flush_interval=60)
        second = LlamaLogger({dsn!r}, schema={schema!r}, flush_interval=60)
        with first.job("script"):
            for number in range(1500):
                first.created(("track", f"first-{{number}}"))
                second.created(("track", f"second-{{number}}"))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert count_rows(dsn, schema, "entity_id LIKE %s", ("first-%",)) == 1500
    assert count_rows(dsn, schema, "entity_id LIKE %s", ("second-%",)) == 1500


@pytest.mark.timing
def test_interpreter_exit_closes_all_loggers_under_one_deadline() -> None:
    """Three loggers that cannot deliver (no server, no spill directory) hold the exit of
    the process for about one exit_timeout, not three."""
    script = textwrap.dedent(
        f"""
        from llamalogger import LlamaLogger
        loggers = [
            LlamaLogger({_NOBODY!r}, spill_dir=False, exit_timeout=3.0) for _ in range(3)
        ]
        for logger in loggers:
            logger.created(("album", 1))
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], check=True, timeout=60, capture_output=True, text=True
    )
    # One deadline is 3 s plus the interpreter's start; one after the other: over 9 s.
    assert time.monotonic() - started < 8.0
    assert done.stderr.count("not written within") == 3  # each says what it lost
