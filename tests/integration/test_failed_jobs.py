"""A job left by an exception records one FAILED event; ``aflush``/``aclose`` for asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from fixtures.database import rows
from llamalogger import Category, LlamaLogger


@pytest.fixture
def logger(dsn: str, schema: str) -> Iterator[LlamaLogger]:
    with LlamaLogger(dsn, schema=schema) as instance:
        yield instance


def failed(dsn: str, schema: str) -> list[dict[str, Any]]:
    return [row for row in rows(dsn, schema) if row["category"] == "FAILED"]


class TestFailedJobs:
    def test_a_block_left_by_an_exception_records_one_failed_event(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        with pytest.raises(LookupError), logger.job("fetch-cover") as job:
            raise LookupError("cover art not found")
        assert logger.flush(10)
        (row,) = failed(dsn, schema)
        assert (row["job_id"], row["job_name"], row["level"]) == (
            job.job_id,
            "fetch-cover",
            "error",
        )
        assert row["message"] == "LookupError: cover art not found"
        assert row["details"]["exception_type"] == "LookupError"
        assert row["details"]["exception_message"] == "cover art not found"
        assert 'raise LookupError("cover art not found")' in row["details"]["exception"]

    def test_no_second_failed_event_when_the_job_logged_one(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        def give_up() -> None:
            logger.log(Category.FAILED, "gave up on the cover", level="error")
            raise RuntimeError("gave up")

        with pytest.raises(RuntimeError), logger.job("fetch-cover"):
            give_up()
        assert logger.flush(10)
        assert [row["message"] for row in failed(dsn, schema)] == ["gave up on the cover"]

    def test_each_job_the_exception_leaves_gets_its_own(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """The inner job logged FAILED itself; the outer one, also left, gets one too."""

        def tag_album() -> None:
            logger.log("failed", "bad tag")
            raise ValueError("bad tag")

        with (
            pytest.raises(ValueError, match="bad tag"),
            logger.job("outer") as outer,
            logger.job("inner") as inner,
        ):
            tag_album()
        assert logger.flush(10)
        assert [(row["job_id"], row["message"]) for row in failed(dsn, schema)] == [
            (inner.job_id, "bad tag"),
            (outer.job_id, "ValueError: bad tag"),
        ]

    def test_a_failed_event_in_an_earlier_job_does_not_count(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        with logger.job("first"):
            logger.log("FAILED", "first failed")
        with pytest.raises(KeyError), logger.job("second") as second:
            raise KeyError("x")
        assert logger.flush(10)
        assert [row["job_id"] for row in failed(dsn, schema)][1:] == [second.job_id]

    def test_decorated_functions_sync_async_and_generators(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        @logger.job("sync")
        def sync() -> None:
            raise OSError("disk full")

        @logger.job("async")
        async def coroutine() -> None:
            raise OSError("disk full")

        @logger.job("generator")
        def generator() -> Iterator[int]:
            yield 1
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            sync()
        with pytest.raises(OSError, match="disk full"):
            asyncio.run(coroutine())
        with pytest.raises(OSError, match="disk full"):
            list(generator())
        assert logger.flush(10)
        assert [row["job_name"] for row in failed(dsn, schema)] == ["sync", "async", "generator"]

    def test_normal_exits_and_non_errors_record_nothing(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """Leaving normally, closing a generator early, cancellation and Ctrl-C are no failures."""

        @logger.job("generator")
        def generator() -> Iterator[int]:
            yield 1
            yield 2

        with logger.job("fine"):
            pass
        numbers = generator()
        next(numbers)
        numbers.close()
        with pytest.raises(KeyboardInterrupt), logger.job("interrupted"):
            raise KeyboardInterrupt

        async def cancelled() -> None:
            with logger.job("cancelled"):
                await asyncio.sleep(3600)

        async def cancel() -> None:
            task = asyncio.create_task(cancelled())
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel())
        assert logger.flush(10)
        assert failed(dsn, schema) == []

    def test_it_can_be_turned_off(self, dsn: str, schema: str) -> None:
        with LlamaLogger(dsn, schema=schema, log_failed_jobs=False) as logger:
            with pytest.raises(LookupError), logger.job("fetch-cover"):
                raise LookupError("cover art not found")
            assert logger.flush(10)
        assert failed(dsn, schema) == []

    def test_log_exception_outside_a_job(self, logger: LlamaLogger, dsn: str, schema: str) -> None:
        try:
            raise ConnectionError("refused")
        except ConnectionError as exc:
            logger.log_exception(exc, "import aborted", album=12)
        assert logger.flush(10)
        (row,) = failed(dsn, schema)
        assert (row["job_id"], row["message"], row["details"]["album"]) == (
            None,
            "import aborted",
            12,
        )


class TestAsyncio:
    def test_aflush_waits_without_blocking_the_event_loop(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """While a lock holds the writer, the loop still runs: it is what releases the lock."""
        table = sql.SQL("LOCK TABLE {}.llama_log IN ACCESS EXCLUSIVE MODE").format(
            sql.Identifier(schema)
        )

        async def main() -> bool:
            with psycopg.connect(dsn) as locker:
                locker.execute(table)  # held until commit: the writer's COPY waits
                logger.created(("album", 1))
                flushing = asyncio.create_task(logger.aflush(60))
                await asyncio.sleep(0.05)  # the loop is free to run this task meanwhile
                assert not flushing.done(), "the flush cannot finish while the lock is held"
                locker.commit()
                return await flushing

        assert asyncio.run(main()) is True
        assert [row["entity_id"] for row in rows(dsn, schema)] == ["1"]

    def test_aclose_writes_everything_and_closes(self, dsn: str, schema: str) -> None:
        logger = LlamaLogger(dsn, schema=schema)
        logger.created(("album", 2))
        assert asyncio.run(logger.aclose(10)) is True
        assert asyncio.run(logger.aclose(10)) is True  # safe twice
        assert [row["entity_id"] for row in rows(dsn, schema)] == ["2"]
