"""structlog's bound contextvars in the details of every row, direct calls included."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars

from fixtures.database import rows
from llamalogger import Category, LlamaLogger
from llamalogger.integrations.logging import LlamaLogHandler
from llamalogger.integrations.structlog import PersistToLlamaLog


@pytest.fixture(autouse=True)
def no_bound_context() -> Iterator[None]:
    """Every test starts and ends with nothing bound in structlog's context."""
    clear_contextvars()
    yield
    clear_contextvars()


@pytest.fixture
def llama(dsn: str, schema: str) -> Iterator[LlamaLogger]:
    with LlamaLogger(dsn, schema=schema) as instance:
        yield instance


def details(dsn: str, schema: str) -> list[tuple[str, dict[str, Any] | None]]:
    return [(row["category"], row["details"]) for row in rows(dsn, schema)]


class TestDirectCalls:
    def test_log_created_and_linked_carry_the_bound_values(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """Values bound with bind_contextvars reach details of log(), created(), linked()
        and log_exception(); an explicit keyword argument wins over a bound value."""
        bind_contextvars(request_id="req-1", user="importer")
        with llama.job("import-album"):
            llama.log(Category.UPDATED, "album retagged", entity=("album", 12), tags=3)
            llama.created(("album", 12))
            llama.linked(("artist", 7), ("album", 12), user="explicit wins")
            llama.log_exception(LookupError("cover art too small"))
        assert llama.flush(timeout=10)
        updated, created, linked, failed = rows(dsn, schema)
        assert updated["details"] == {"tags": 3, "request_id": "req-1", "user": "importer"}
        assert created["details"] == {"request_id": "req-1", "user": "importer"}
        assert linked["details"] == {"request_id": "req-1", "user": "explicit wins"}
        assert failed["details"]["request_id"] == "req-1"
        assert failed["details"]["exception_type"] == "LookupError"

    def test_only_what_is_bound_at_the_call_is_added(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """Unbound, cleared or reset values are not added; a key first bound after the
        logger's first events is picked up."""
        llama.log(Category.UPDATED, "nothing bound")
        with bound_contextvars(request_id="req-2"):
            llama.log(Category.UPDATED, "inside bound_contextvars")
        llama.log(Category.UPDATED, "after it")
        bind_contextvars(**{f"first_bound_{uuid.uuid4().hex[:6]}": 1})
        llama.log(Category.UPDATED, "a new key")
        clear_contextvars()
        llama.log(Category.UPDATED, "cleared")
        assert llama.flush(timeout=10)
        logged = [row["details"] for row in rows(dsn, schema)]
        assert logged[:3] == [None, {"request_id": "req-2"}, None]
        assert logged[3] is not None
        assert list(logged[3].values()) == [1]
        assert logged[3:] == [logged[3], None]

    def test_column_and_private_keys_are_not_copied(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """Bound keys that PersistToLlamaLog keeps out of details (entity, job_id, ...) and
        private ones are left out of direct calls' details too."""
        bind_contextvars(entity=("album", 1), job_id="forged", _private=1, request_id="req-3")
        with llama.job("import-album") as job:
            llama.log(Category.UPDATED, "album retagged")
        assert llama.flush(timeout=10)
        (row,) = rows(dsn, schema)
        assert row["details"] == {"request_id": "req-3"}
        assert (row["entity_type"], row["job_id"]) == (None, job.job_id)

    def test_each_asyncio_task_has_its_own_values(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """contextvars are per task: concurrent tasks never see each other's values."""

        async def handle(request_id: str) -> None:
            bind_contextvars(request_id=request_id)
            await asyncio.sleep(0)
            llama.log(Category.UPDATED, request_id)
            await asyncio.sleep(0)
            llama.log(Category.UPDATED, request_id)

        async def main() -> None:
            await asyncio.gather(*(handle(f"req-{n}") for n in range(5)))

        asyncio.run(main())
        assert llama.flush(timeout=10)
        stored = rows(dsn, schema)
        assert len(stored) == 10
        assert all(row["details"] == {"request_id": row["message"]} for row in stored)


class TestFailedJobs:
    def test_the_automatic_failed_row_carries_the_bound_values(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """A job left by an exception logs its FAILED row with what was bound in it."""

        @llama.job("enrich-track")
        def enrich(track_id: int) -> None:
            bind_contextvars(request_id="req-4", track=track_id)
            raise TimeoutError("lyrics service timed out")

        with pytest.raises(TimeoutError):
            enrich(9)
        assert llama.flush(timeout=10)
        (failed,) = rows(dsn, schema)
        assert failed["category"] == "FAILED"
        assert failed["job_name"] == "enrich-track"
        assert (failed["details"]["request_id"], failed["details"]["track"]) == ("req-4", 9)
        assert failed["details"]["exception_type"] == "TimeoutError"


class TestSwitchedOff:
    def test_structlog_context_false_adds_nothing(self, dsn: str, schema: str) -> None:
        """LlamaLogger(structlog_context=False): direct calls and the FAILED row get only
        their own details; a structlog chain with merge_contextvars still adds them to its
        own events, as structlog does."""
        bind_contextvars(request_id="req-5")
        with LlamaLogger(dsn, schema=schema, structlog_context=False) as llama:
            log = structlog.wrap_logger(
                structlog.testing.ReturnLogger(),
                processors=[structlog.contextvars.merge_contextvars, PersistToLlamaLog(llama)],
            )

            @llama.job("fetch-cover")
            def fetch_cover() -> None:
                llama.created(("album", 12), source="musicbrainz")
                log.info("cover found", category="enriched")
                raise LookupError("cover art too small")

            with pytest.raises(LookupError):
                fetch_cover()
            assert llama.flush(timeout=10)
        created, enriched, failed = rows(dsn, schema)
        assert created["details"] == {"source": "musicbrainz"}
        assert enriched["details"] == {"request_id": "req-5"}
        assert failed["category"] == "FAILED"
        assert "request_id" not in failed["details"]


class TestBridges:
    def test_structlog_rows_get_them_without_merge_contextvars(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """A chain without merge_contextvars still stores the bound values: every row of a
        logger gets them, whichever way it was logged; the event's own keys win."""
        bind_contextvars(request_id="req-6", source="bound")
        log = structlog.wrap_logger(
            structlog.testing.ReturnLogger(), processors=[PersistToLlamaLog(llama)]
        )
        log.info("cover found", category="enriched", source="event")
        assert llama.flush(timeout=10)
        assert details(dsn, schema) == [("ENRICHED", {"source": "event", "request_id": "req-6"})]

    def test_logging_handler_rows_get_them(self, llama: LlamaLogger, dsn: str, schema: str) -> None:
        """Rows stored by LlamaLogHandler carry the bound values as well."""
        bind_contextvars(request_id="req-7")
        worker = logging.getLogger(f"tests.bound.{uuid.uuid4().hex[:8]}")
        worker.propagate = False
        worker.setLevel(logging.INFO)
        handler = LlamaLogHandler(llama)
        worker.addHandler(handler)
        try:
            worker.info("tempo detected", extra={"category": "enriched", "bpm": 128})
        finally:
            worker.removeHandler(handler)
        assert llama.flush(timeout=10)
        assert details(dsn, schema) == [
            ("ENRICHED", {"bpm": 128, "logger": worker.name, "request_id": "req-7"})
        ]
