"""The public task API on a real server: ``task_job``, ``task_ended``, ``failed_logged``.

What an integration for another queue (arq, Huey, ...) writes, as docs/api.md shows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from llamalogger import Category, JobContext, LlamaLogger, current_job


def rows(dsn: str, schema: str) -> list[dict[str, Any]]:
    query = sql.SQL("SELECT * FROM {}.llama_log ORDER BY id").format(sql.Identifier(schema))
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query).fetchall()


@pytest.fixture
def logger(dsn: str, schema: str) -> Iterator[LlamaLogger]:
    # A writer that would wait 60 s before writing on its own: what is in the table right
    # after task_ended() returns was delivered by task_ended().
    with LlamaLogger(dsn, schema=schema, flush_interval=60) as instance:
        yield instance


class TestTaskJob:
    def test_the_queue_id_is_the_job_id_and_the_parent_comes_from_headers(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """A task's rows carry the queue's id, the sender's job as parent and its root."""
        sender = JobContext(job_id="import-1", parent_job_id="catalogue", root_job_id="catalogue")
        parent = JobContext.from_untrusted_headers(sender.to_headers())
        with logger.task_job("fetch_cover", job_id="msg-7", parent=parent) as job:
            assert current_job() == job
            logger.log(Category.ENRICHED, "cover found")
        logger.task_ended()
        (row,) = rows(dsn, schema)
        assert (row["job_id"], row["parent_job_id"], row["root_job_id"], row["job_name"]) == (
            "msg-7",
            "import-1",
            "catalogue",
            "fetch_cover",
        )

    def test_ids_and_names_from_a_message_never_stop_the_task(self, logger: LlamaLogger) -> None:
        """An id that cannot be a job id gets a generated one; a long name is cut."""
        for bad in ("x" * 101, "", "a\x00b", 42):
            with logger.task_job("n" * 500, job_id=bad) as job:  # type: ignore[arg-type]
                assert job.job_id != bad
                assert len(job.job_id) == 36
                assert job.name == "n" * 200
        with pytest.raises(TypeError, match="task name must be a str"):
            logger.task_job(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="parent must be a JobContext"):
            logger.task_job("t", parent={"llamalog-job-id": "a"})  # type: ignore[arg-type]

    def test_without_a_parent_a_task_started_in_a_job_is_its_child(
        self, logger: LlamaLogger
    ) -> None:
        """Like job(): run inside a job (an eager run) it hangs under that job."""
        with logger.job("import") as outer, logger.task_job("t", job_id="t-1") as task:
            assert (task.parent_job_id, task.root_job_id) == (outer.job_id, outer.root_job_id)
        with logger.task_job("t", job_id="t-2") as alone:
            assert (alone.parent_job_id, alone.root_job_id) == (None, "t-2")


class TestFailures:
    def test_failed_logged_tells_whether_the_job_reported_a_failure(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """An integration logs one FAILED event, and none when the task logged its own."""
        assert not logger.failed_logged()  # outside any job
        for job_id, reports in (("own", True), ("integration", False)):
            with logger.task_job("t", job_id=job_id):
                assert not logger.failed_logged()
                if reports:
                    logger.log(Category.FAILED, "gave up", level="error")
                error = LookupError("cover art not found")
                if not logger.failed_logged():
                    logger.log_exception(error)
                assert logger.failed_logged()
            assert not logger.failed_logged()
        logger.task_ended()
        failed = [(row["job_id"], row["message"]) for row in rows(dsn, schema)]
        assert failed == [("own", "gave up"), ("integration", "LookupError: cover art not found")]

    def test_a_job_left_by_an_exception_records_it_once(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """As with job(): the exception that leaves a task job is its one FAILED event."""
        with pytest.raises(RuntimeError), logger.task_job("t", job_id="raises"):
            raise RuntimeError("boom")
        logger.task_ended()
        assert [(r["job_id"], r["category"]) for r in rows(dsn, schema)] == [("raises", "FAILED")]


def test_task_ended_delivers_what_every_task_logged(
    logger: LlamaLogger, dsn: str, schema: str
) -> None:
    """After task_ended() returns, every event logged so far is in the table."""
    for number in range(3):
        with logger.task_job("t", job_id=f"task-{number}"):
            for event in range(100):
                logger.log(Category.UPDATED, "step", step=event)
        logger.task_ended()
        assert len(rows(dsn, schema)) == 100 * (number + 1)
