"""LlamaLogger end to end on a real server: what is logged is what lands in llama_log."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from fixtures.database import rows
from llamalogger import (
    Category,
    ConfigurationError,
    Entity,
    JobContext,
    LlamaLogger,
)
from llamalogger.schema import migrate


@pytest.fixture
def logger(dsn: str, schema: str) -> Iterator[LlamaLogger]:
    with LlamaLogger(dsn, schema=schema) as instance:
        yield instance


class TestWhatIsStored:
    def test_events_carry_the_dual_hierarchy(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        with logger.job("import-album") as root:
            logger.created(("album", 12), title="Blue")
            with logger.job("link-artist") as child:
                logger.linked(("artist", 7), ("album", 12), "artist linked to album")
        assert logger.flush(timeout=10)
        stored = rows(dsn, schema)
        assert [
            (r["job_id"], r["parent_job_id"], r["root_job_id"], r["job_name"]) for r in stored
        ] == [
            (root.job_id, None, root.job_id, "import-album"),
            (child.job_id, root.job_id, root.job_id, "link-artist"),
        ]
        created, linked = stored
        assert created["category"] == "CREATED"
        assert (created["entity_type"], created["entity_id"]) == ("album", "12")
        assert created["message"] == "album 12 created"
        assert created["details"] == {"title": "Blue"}
        assert linked["category"] == "LINKED"
        assert (linked["entity_type"], linked["entity_id"]) == ("artist", "7")
        assert (linked["related_type"], linked["related_id"]) == ("album", "12")
        assert linked["message"] == "artist linked to album"
        assert linked["details"] is None

    def test_events_outside_any_job_have_no_job_columns(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        logger.log("updated", "catalogue reindexed", level="warning")
        assert logger.flush(timeout=10)
        (row,) = rows(dsn, schema)
        assert (row["job_id"], row["parent_job_id"], row["root_job_id"], row["job_name"]) == (
            None,
            None,
            None,
            None,
        )
        assert (row["category"], row["level"]) == ("UPDATED", "warning")

    def test_logged_at_is_the_callers_clock_not_insert_time(self, dsn: str, schema: str) -> None:
        # A long flush interval: the writer only writes when flush() asks it to.
        with LlamaLogger(dsn, schema=schema, flush_interval=30) as logger:
            before = dt.datetime.now(dt.UTC)
            logger.created(Entity("track", "9"))
            after = dt.datetime.now(dt.UTC)
            time.sleep(0.3)  # a gap between logging and writing, not a wait for the writer
            assert logger.flush(timeout=10)
        (row,) = rows(dsn, schema)
        assert before <= row["logged_at"] <= after

    def test_every_category_is_accepted_by_the_schema(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        for category in Category:
            related = ("album", 1) if category is Category.LINKED else None
            logger.log(category, category.value.lower(), related=related)
        logger.log("matched", "by name, any case")
        assert logger.flush(timeout=10)
        stored = [r["category"] for r in rows(dsn, schema)]
        assert stored == [c.value for c in Category] + ["MATCHED"]

    def test_non_json_details_are_stored_in_documented_form(
        self, logger: LlamaLogger, dsn: str, schema: str
    ) -> None:
        cyclic: list[object] = []
        cyclic.append(cyclic)
        logger.log(
            Category.ENRICHED,
            "odd details",
            price=decimal.Decimal("1.10"),
            when=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            tags={"b", "a"},
            raw=b"\x01\x02",
            loop=cyclic,
            nan=float("nan"),
        )
        logger.log(Category.ENRICHED, "bad text\x00 and \ud800", note="nul\x00")
        assert logger.flush(timeout=10)
        first, second = rows(dsn, schema)
        assert first["details"] == {
            "price": "1.10",
            "when": "2026-01-02T03:04:05+00:00",
            "tags": ["a", "b"],
            "raw": "0102",
            "loop": ["[cycle]"],
            "nan": "nan",
        }
        assert second["message"] == "bad text\ufffd and \ufffd"
        assert second["details"] == {"note": "nul\ufffd"}
        assert logger.stats()["sanitised"] == 2


class TestCallerMistakes:
    @pytest.mark.parametrize(
        ("call", "words"),
        [
            (lambda lg: lg.log("EXPLODED", "x"), "unknown category"),
            (lambda lg: lg.log(Category.CREATED, "x", level="loud"), "level"),
            (lambda lg: lg.created(("", 1)), "type must be a non-empty"),
            (lambda lg: lg.created(("artist", "x" * 300)), "longer than"),
            (lambda lg: lg.created("artist-7"), r"\(type, id\) pair"),
            (lambda lg: lg.linked(("artist", 7), ("track", None)), "related id"),
            (lambda lg: lg.job("x", job_id=""), "empty"),
        ],
    )
    def test_programming_errors_raise_value_error_at_the_call(
        self, logger: LlamaLogger, call: Any, words: str
    ) -> None:
        with pytest.raises(ValueError, match=words):
            call(logger)
        assert logger.stats()["enqueued"] == 0

    def test_configuration_errors_raise_at_construction(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("LLAMALOG_DSN", raising=False)
        with pytest.raises(ConfigurationError, match="LLAMALOG_DSN"):
            LlamaLogger()
        with pytest.raises(ConfigurationError, match="invalid DSN"):
            LlamaLogger("host=x port")
        with pytest.raises(ConfigurationError, match="schema"):
            LlamaLogger("host=x", schema="")

    def test_password_never_appears_in_repr(self) -> None:
        logger = LlamaLogger("postgresql://writer:s3cret-pw@127.0.0.1:1/nowhere", exit_timeout=0.1)
        try:
            assert "s3cret-pw" not in repr(logger)
            assert "***" in repr(logger)
        finally:
            logger.close(timeout=0.1)


class TestLifeCycle:
    def test_close_writes_everything_and_is_safe_twice(self, dsn: str, schema: str) -> None:
        logger = LlamaLogger(dsn, schema=schema, flush_interval=30)
        for number in range(1234):
            logger.created(("track", number))
        assert logger.close(timeout=10)
        assert logger.close(timeout=10)
        assert len(rows(dsn, schema)) == 1234
        assert logger.stats()["written"] == 1234

    def test_logging_after_close_is_counted_as_dropped(
        self, dsn: str, schema: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        logger = LlamaLogger(dsn, schema=schema)
        logger.close(timeout=10)
        with caplog.at_level(logging.WARNING, logger="llamalogger"):
            logger.created(("track", 1))
            logger.created(("track", 2))
        assert logger.stats()["dropped"] == 2
        assert sum("closed" in record.getMessage() for record in caplog.records) == 1

    def test_stats_count_batches(self, dsn: str, schema: str) -> None:
        with LlamaLogger(dsn, schema=schema, batch_size=100, flush_interval=30) as logger:
            for number in range(1000):
                logger.created(("track", number))
            assert logger.flush(timeout=10)
            stats = logger.stats()
        assert stats["enqueued"] == stats["written"] == 1000
        assert stats["batches"] >= 10
        assert stats["queue_depth"] == 0

    def test_shared_pool_is_used_and_left_open(self, dsn: str, schema: str) -> None:
        with ConnectionPool(dsn, min_size=1, max_size=2) as pool:
            with LlamaLogger(pool=pool, schema=schema) as logger:
                logger.created(("album", 1))
            assert not pool.closed
            with pool.connection() as conn:
                count = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}.llama_log").format(sql.Identifier(schema))
                ).fetchone()
            assert count == (1,)

    def test_headers_continue_a_job_in_another_logger(self, dsn: str, schema: str) -> None:
        with LlamaLogger(dsn, schema=schema) as producer, producer.job("import-album") as root:
            producer.created(("album", 1))
            headers = root.to_headers()
        parent = JobContext.from_headers(headers)
        with LlamaLogger(dsn, schema=schema) as consumer, consumer.job("x", parent=parent) as job:
            consumer.log(Category.UPDATED, "transcoded", entity=("track", 3))
        stored = rows(dsn, schema)
        assert stored[1]["job_id"] == job.job_id
        assert stored[1]["parent_job_id"] == root.job_id
        assert stored[1]["root_job_id"] == root.job_id


class TestDatabaseTrouble:
    def test_rejected_record_is_isolated_and_batch_mates_are_written(
        self, dsn: str, schema_name: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A row the database refuses costs only itself (here: LINKED before migration 0002)."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn, schema=schema_name, target="0001")
            conn.execute(
                sql.SQL("ALTER TABLE {}.llama_log ADD COLUMN root_job_id varchar(100)").format(
                    sql.Identifier(schema_name)
                )
            )
            # The writer keeps every row of a schema without llama_job (0006) on disk, for
            # `llamalog migrate`: a stand-in lets this 0001-era table refuse LINKED by itself.
            conn.execute(
                sql.SQL("CREATE TABLE {}.llama_job ()").format(sql.Identifier(schema_name))
            )
        with (
            caplog.at_level(logging.ERROR, logger="llamalogger"),
            LlamaLogger(dsn, schema=schema_name, flush_interval=30) as logger,
        ):
            for number in range(100):
                if number == 37:
                    logger.linked(("artist", 1), ("track", number))
                else:
                    logger.created(("track", number))
            assert logger.flush(timeout=10)
            stats = logger.stats()
        assert (stats["written"], stats["rejected"]) == (99, 1)
        stored = rows(dsn, schema_name)
        assert [r["entity_id"] for r in stored] == [str(n) for n in range(100) if n != 37]
        assert any(
            "rejected" in r.getMessage() and "LINKED" in r.getMessage() for r in caplog.records
        )

    @pytest.mark.timing
    def test_unreachable_database_keeps_records_and_close_is_bounded(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Nothing listens on port 1 and spilling is off: records stay queued, drops are
        counted once each, close gives up in time, and the counters add up."""
        logger = LlamaLogger(
            "postgresql://postgres@127.0.0.1:1/test",
            queue_size=50,
            flush_interval=0.01,
            on_full="drop",
            spill_dir=False,
        )
        with caplog.at_level(logging.WARNING, logger="llamalogger"):
            for number in range(80):
                logger.created(("track", number))
            assert not logger.flush(timeout=0.3)
            started = time.monotonic()
            assert not logger.close(timeout=1.0)
            elapsed = time.monotonic() - started
        stats = logger.stats()
        assert elapsed < 5
        assert stats["written"] == 0
        assert stats["dropped"] == 80  # 30 when the queue was full, the rest at close
        assert stats["retried"] >= 1
        assert stats["enqueued"] == 80
        assert stats["queued"] == stats["on_disk"] == 0
        messages = " ".join(record.getMessage() for record in caplog.records)
        assert "cannot write to the database" in messages
        assert "queue is full" in messages
        assert "not written" in messages

    @pytest.mark.timing
    def test_block_policy_waits_then_drops(self) -> None:
        logger = LlamaLogger(
            "postgresql://postgres@127.0.0.1:1/test",
            queue_size=1,
            batch_size=1,
            flush_interval=30,
            on_full="block",
            block_timeout=0.05,
            spill_dir=False,
        )
        try:
            started = time.monotonic()
            for number in range(5):
                logger.created(("track", number))
            elapsed = time.monotonic() - started
        finally:
            logger.close(timeout=0.2)
        assert elapsed >= 0.05
        assert logger.stats()["dropped"] >= 1
