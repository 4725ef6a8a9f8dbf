"""Every job leaves one record in ``llama_job`` (status, real start and end, entity, error,
process and host), and its context reaches every event it logs (docs/concepts.md, "Jobs")."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import time
from collections.abc import Iterator

import pytest

from fixtures.database import job_rows, rows
from llamalogger import Category, Entity, LlamaLogger


@pytest.fixture
def logger(dsn: str, schema: str) -> Iterator[LlamaLogger]:
    with LlamaLogger(dsn, schema=schema) as instance:
        yield instance


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TestJobRecords:
    def test_a_job_that_succeeded_has_its_real_start_end_and_place(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        before = _now()
        with logger.job("import-album", entity=("album", 12)) as album:
            time.sleep(0.3)
            with logger.job("link-artist") as link:
                logger.linked(("artist", 7), ("album", 12))
        after = _now()
        assert logger.flush(10)
        by_id = {row["job_id"]: row for row in job_rows(dsn, schema)}
        assert set(by_id) == {album.job_id, link.job_id}
        outer, inner = by_id[album.job_id], by_id[link.job_id]
        assert (outer["parent_job_id"], outer["root_job_id"]) == (None, album.job_id)
        assert (inner["parent_job_id"], inner["root_job_id"]) == (album.job_id, album.job_id)
        assert (outer["job_name"], outer["entity_type"], outer["entity_id"]) == (
            "import-album",
            "album",
            "12",
        )
        assert (inner["entity_type"], inner["entity_id"]) == (None, None)
        for row in (outer, inner):
            assert row["status"] == "succeeded"
            assert row["attempt"] == 1
            assert (row["error_type"], row["error_message"]) == (None, None)
            assert (row["pid"], row["host"]) == (os.getpid(), socket.gethostname())
            assert before <= row["started_at"] <= row["ended_at"] <= after
        # The real duration, not the span between events: the outer job slept 0.3 s.
        assert outer["ended_at"] - outer["started_at"] >= dt.timedelta(seconds=0.3)
        assert outer["started_at"] <= inner["started_at"] <= inner["ended_at"] <= outer["ended_at"]

    def test_a_job_that_logs_nothing_still_has_its_record(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        with logger.job("publish-tree") as root:
            pass
        assert logger.flush(10)
        assert rows(dsn, schema) == []
        (row,) = job_rows(dsn, schema)
        assert (row["job_id"], row["status"], row["root_job_id"]) == (
            root.job_id,
            "succeeded",
            root.job_id,
        )

    def test_a_job_left_by_an_exception_failed_with_its_error(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        with pytest.raises(LookupError), logger.job("enrich-track", entity=Entity("track", "3")):
            raise LookupError("no tempo for track 3")
        assert logger.flush(10)
        (row,) = job_rows(dsn, schema)
        assert (row["status"], row["error_type"], row["error_message"]) == (
            "failed",
            "LookupError",
            "no tempo for track 3",
        )
        assert (row["entity_type"], row["entity_id"]) == ("track", "3")

    def test_cancellation_and_ctrl_c_are_cancelled_not_failed(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        async def cancelled() -> None:
            with logger.job("transcode"):
                await asyncio.sleep(10)

        async def main() -> None:
            task = asyncio.create_task(cancelled())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        with pytest.raises(KeyboardInterrupt), logger.job("import-album"):
            raise KeyboardInterrupt
        assert logger.flush(10)
        assert [(r["job_name"], r["status"], r["error_type"]) for r in job_rows(dsn, schema)] == [
            ("transcode", "cancelled", "asyncio.exceptions.CancelledError"),
            ("import-album", "cancelled", "KeyboardInterrupt"),
        ]
        assert not [row for row in rows(dsn, schema) if row["category"] == "FAILED"]

    def test_decorated_functions_leave_a_record_per_call(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        @logger.job("enrich-track", source="musicbrainz")
        def enrich(track_id: int) -> None:
            logger.log(Category.ENRICHED, "tempo", entity=("track", track_id))

        enrich(1)
        enrich(2)
        assert logger.flush(10)
        records = job_rows(dsn, schema)
        assert [row["details"] for row in records] == [{"source": "musicbrainz"}] * 2
        assert len({row["job_id"] for row in records}) == 2


class TestJobContext:
    def test_every_event_of_a_job_carries_its_context_and_a_call_wins(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        with logger.job("import-album", source="discogs", batch=7) as job:
            logger.created(("album", 12))
            logger.log(Category.UPDATED, "retitled", entity=("album", 12), source="manual")
            logger.linked(("artist", 7), ("album", 12), role="main")
        assert logger.flush(10)
        assert [row["details"] for row in rows(dsn, schema)] == [
            {"source": "discogs", "batch": 7},
            {"source": "manual", "batch": 7},
            {"source": "discogs", "batch": 7, "role": "main"},
        ]
        (record,) = job_rows(dsn, schema)
        assert record["details"] == {"source": "discogs", "batch": 7}
        assert job.details == {"source": "discogs", "batch": 7}

    def test_nested_jobs_inherit_the_context_and_add_their_own(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        with logger.job("import-album", source="discogs"), logger.job("fetch", attempt_of="x"):
            logger.log(Category.MATCHED, "matched", entity=("track", 1))
        with logger.job("outside"):
            logger.log(Category.MATCHED, "matched", entity=("track", 2))
        assert logger.flush(10)
        assert [row["details"] for row in rows(dsn, schema)] == [
            {"source": "discogs", "attempt_of": "x"},
            None,
        ]

    def test_the_automatic_failed_event_carries_the_jobs_entity_and_context(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        with (
            pytest.raises(ValueError, match="bad tempo"),
            logger.job("enrich", entity=("track", 3), run="nightly"),
        ):
            raise ValueError("bad tempo")
        assert logger.flush(10)
        (failed,) = rows(dsn, schema)
        assert failed["category"] == "FAILED"
        assert (failed["entity_type"], failed["entity_id"]) == ("track", "3")
        assert failed["details"]["run"] == "nightly"
        assert failed["details"]["exception_type"] == "ValueError"

    def test_bad_job_arguments_raise_at_the_call(self, logger: LlamaLogger) -> None:
        with pytest.raises(ValueError, match="entity"):
            logger.job("x", entity=["album", 12])
        with pytest.raises(ValueError, match="entity"):
            logger.job("x", entity=("album",))


class TestTaskJobs:
    def test_attempts_of_a_retried_task_are_one_job_with_a_record_each(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        for attempt in (1, 2):
            with logger.task_job("enrich", job_id="task-1", attempt=attempt):
                logger.task_outcome("retried", error=TimeoutError("slow api"))
        with logger.task_job("enrich", job_id="task-1", attempt=3):
            logger.task_outcome("failed", error="work horse ended unexpectedly")
        assert logger.flush(10)
        assert [
            (r["job_id"], r["attempt"], r["status"], r["error_type"], r["error_message"])
            for r in job_rows(dsn, schema)
        ] == [
            ("task-1", 1, "retried", "TimeoutError", "slow api"),
            ("task-1", 2, "retried", "TimeoutError", "slow api"),
            ("task-1", 3, "failed", None, "work horse ended unexpectedly"),
        ]

    def test_task_job_checks_what_is_the_integrations_own_mistake(
        self, logger: LlamaLogger
    ) -> None:
        with pytest.raises(ValueError, match="attempt"):
            logger.task_job("t", attempt=0)
        with pytest.raises(ValueError, match="exploded"):
            logger.task_outcome("exploded")
        logger.task_outcome("failed")  # outside any job: nothing to say it of


class TestSmallerChecks:
    def test_linked_needs_its_object_and_an_entity_is_a_tuple(self, logger: LlamaLogger) -> None:
        with pytest.raises(ValueError, match="related"):
            logger.log(Category.LINKED, "linked to nothing", entity=("artist", 7))
        with pytest.raises(ValueError, match="entity"):
            logger.log(Category.CREATED, "a list", entity=["album", 12])

    def test_warn_is_warning(self, logger: LlamaLogger, dsn: str, schema: str) -> None:
        logger.log(Category.SKIPPED, "cover art missing", level="warn")
        logger.created(("album", 1), level="warn")
        assert logger.flush(10)
        assert [row["level"] for row in rows(dsn, schema)] == ["warning", "warning"]
