"""structlog processors and the stdlib handler on a real server: what they log is stored."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog

from fixtures.database import rows
from llamalogger import Category, Entity, LlamaLogger
from llamalogger.integrations.logging import LlamaLogHandler
from llamalogger.integrations.structlog import NOT_DETAILS, PersistToLlamaLog, add_job_context

JOB_KEYS = ("job_id", "parent_job_id", "root_job_id", "job_name")


def job_columns(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[key] for key in JOB_KEYS)


@pytest.fixture
def llama(dsn: str, schema: str) -> Iterator[LlamaLogger]:
    with LlamaLogger(dsn, schema=schema) as instance:
        yield instance


# --- structlog -----------------------------------------------------------------------


class Capture:
    """The last processor: keeps (method name, a copy of the event dict) and drops the event."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        self.entries.append((method_name, dict(event_dict)))
        raise structlog.DropEvent


def structlog_logger(*processors: Any) -> tuple[Any, Capture]:
    """A structlog logger running ``processors`` then a ``Capture``; no global configuration."""
    capture = Capture()
    logger = structlog.wrap_logger(
        structlog.testing.ReturnLogger(),
        processors=[*processors, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    return logger, capture


class TestAddJobContext:
    def test_adds_the_ids_of_the_current_job_at_every_depth(self, llama: LlamaLogger) -> None:
        """Inside nested jobs each event carries the innermost job's id, parent, root and name."""
        log, capture = structlog_logger(add_job_context)
        with llama.job("import-album") as root:
            log.info("album started")
            with llama.job("link-artist") as child:
                log.info("artist linked")
            log.info("album done")
        assert [{key: event.get(key) for key in JOB_KEYS} for _, event in capture.entries] == [
            dict(zip(JOB_KEYS, (root.job_id, None, root.job_id, "import-album"), strict=True)),
            dict(
                zip(JOB_KEYS, (child.job_id, root.job_id, root.job_id, "link-artist"), strict=True)
            ),
            dict(zip(JOB_KEYS, (root.job_id, None, root.job_id, "import-album"), strict=True)),
        ]
        # Inside a job all four keys are present, even when their value is None.
        assert all(set(JOB_KEYS) <= set(event) for _, event in capture.entries)

    def test_adds_nothing_outside_any_job(self) -> None:
        """Outside a job the event dict is left exactly as it was."""
        log, capture = structlog_logger(add_job_context)
        log.info("idle", queue="albums")
        assert capture.entries == [("info", {"event": "idle", "queue": "albums"})]

    def test_keeps_keys_the_caller_set(self, llama: LlamaLogger) -> None:
        """An explicit job_id (or any job key) wins over the context; the others are filled."""
        log, capture = structlog_logger(add_job_context)
        with llama.job("import-album") as root:
            log.info("replayed", job_id="from-the-message", job_name=None)
        ((_, event),) = capture.entries
        assert event["job_id"] == "from-the-message"
        assert event["job_name"] is None
        assert event["root_job_id"] == root.job_id


class TestPersistToLlamaLog:
    def test_stores_columns_details_and_the_job_columns(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """Category, entity, related, message and level go to columns, the rest to details."""
        log, _ = structlog_logger(
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            add_job_context,
            PersistToLlamaLog(llama),
        )
        with llama.job("import-album") as root:
            log.info("album created", category="created", entity=("album", 12), title="Blue")
            with llama.job("link-artist") as child:
                log.warning(
                    "artist linked",
                    category=Category.LINKED,
                    entity=Entity("artist", "7"),
                    related=("album", 12),
                    score=0.9,
                )
        assert llama.flush(timeout=10)
        created, linked = rows(dsn, schema)
        assert job_columns(created) == (root.job_id, None, root.job_id, "import-album")
        assert job_columns(linked) == (child.job_id, root.job_id, root.job_id, "link-artist")
        assert (created["category"], created["level"], created["message"]) == (
            "CREATED",
            "info",
            "album created",
        )
        assert (created["entity_type"], created["entity_id"]) == ("album", "12")
        assert (created["related_type"], created["related_id"]) == (None, None)
        assert created["details"] == {"title": "Blue"}  # no timestamp, level or job keys
        assert (linked["category"], linked["level"]) == ("LINKED", "warning")
        assert (linked["entity_type"], linked["entity_id"]) == ("artist", "7")
        assert (linked["related_type"], linked["related_id"]) == ("album", "12")
        assert linked["details"] == {"score": 0.9}

    def test_the_job_columns_come_from_the_context_not_the_event(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """Job keys in the event dict are neither stored as details nor trusted as columns."""
        persist = PersistToLlamaLog(llama)
        persist(None, "info", {"event": "outside", "category": "updated", "job_id": "forged"})
        assert llama.flush(timeout=10)
        (row,) = rows(dsn, schema)
        assert job_columns(row) == (None, None, None, None)
        assert row["details"] is None

    def test_passes_the_event_dict_on_unchanged(self, llama: LlamaLogger) -> None:
        """The processor returns the very dict it got, with the same keys and values."""
        persist = PersistToLlamaLog(llama)
        event: dict[str, Any] = {
            "event": "album created",
            "category": "created",
            "entity": ("album", 12),
            "exc_info": False,
            "message": "clashes with log()",
            "title": "Blue",
        }
        before = dict(event)
        assert persist(None, "info", event) is event
        assert event == before

    def test_plain_events_are_stored_as_noted_unless_default_category_says_otherwise(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """An event without a category is NOTED by default, default_category's otherwise;
        default_category=None stores only events with a category, and passes every one on."""
        log, _ = structlog_logger(PersistToLlamaLog(llama))
        log.warning("retrying the cover art service", attempt=2)
        filtering, capture = structlog_logger(PersistToLlamaLog(llama, default_category=None))
        filtering.info("heartbeat")
        filtering.info("album created", category="created")
        defaulted, _ = structlog_logger(PersistToLlamaLog(llama, default_category="skipped"))
        defaulted.info("no category given")
        defaulted.info("own category wins", category="matched")
        assert llama.flush(timeout=10)
        assert [
            (r["category"], r["level"], r["message"], r["details"]) for r in rows(dsn, schema)
        ] == [
            ("NOTED", "warning", "retrying the cover art service", {"attempt": 2}),
            ("CREATED", "info", "album created", None),
            ("SKIPPED", "info", "no category given", None),
            ("MATCHED", "info", "own category wins", None),
        ]
        assert [event["event"] for _, event in capture.entries] == ["heartbeat", "album created"]

    def test_private_keys_are_left_out_of_details(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """Keys starting with ``_`` (structlog's and other libraries' bookkeeping) are never
        stored; the event dict the processors after it see keeps them."""
        log, capture = structlog_logger(PersistToLlamaLog(llama))
        log.info(
            "album created", category="created", _internal=1, __lib_marker={"x": 1}, title="Blue"
        )
        assert llama.flush(timeout=10)
        (row,) = rows(dsn, schema)
        assert row["details"] == {"title": "Blue"}
        ((_, event),) = capture.entries
        assert event["_internal"] == 1

    def test_a_foreign_stdlib_record_through_processor_formatter_is_a_noted_row(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """A third-party library's stdlib record, rendered by structlog's ProcessorFormatter
        with its extras added (ExtraAdder): NOTED, its own level, no private extra, no
        ProcessorFormatter bookkeeping (``_record``, ``_from_structlog``) in details."""
        formatter = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), PersistToLlamaLog(llama)],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
        handler = logging.StreamHandler(io.StringIO())
        handler.setFormatter(formatter)
        third_party = logging.getLogger(f"urllib3.connectionpool.{uuid.uuid4().hex[:8]}")
        third_party.propagate = False
        third_party.addHandler(handler)
        try:
            with llama.job("fetch-cover") as job:
                urllib3_like_retry_warning(third_party)
        finally:
            third_party.removeHandler(handler)
        assert llama.flush(timeout=10)
        (row,) = rows(dsn, schema)
        assert (row["category"], row["level"], row["job_id"]) == ("NOTED", "warning", job.job_id)
        assert row["message"].startswith("Retrying (Retry(total=2")
        assert row["details"] is None

    def test_details_follow_each_shape_of_event_dict(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """Event dicts of many shapes (more than the processor remembers), the same keys in
        another order, a private key appearing later: each row has exactly its own details."""
        persist = PersistToLlamaLog(llama)
        expected = []
        for n in range(1100):
            event: dict[str, Any] = {"event": f"e{n}", "category": "updated", f"k{n}": n}
            if n % 3 == 0:
                event = dict(reversed(event.items()))
            if n % 5 == 0:
                event["_private"] = n
            persist(None, "info", event)
            expected.append({f"k{n}": n})
        assert llama.flush(timeout=30)
        assert [row["details"] for row in rows(dsn, schema)] == expected

    def test_a_failed_event_is_the_jobs_only_failed_row(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """log.exception(category="failed") in a job left by that exception: one FAILED row."""
        log, _ = structlog_logger(PersistToLlamaLog(llama))

        @llama.job("enrich")
        def enrich() -> None:
            try:
                raise RuntimeError("lyrics service timed out")
            except RuntimeError:
                log.exception("enrichment failed", category="failed")
                raise

        with pytest.raises(RuntimeError):
            enrich()
        assert llama.flush(timeout=10)
        assert [(r["category"], r["message"]) for r in rows(dsn, schema)] == [
            ("FAILED", "enrichment failed")
        ]

    def test_the_level_comes_from_the_method_name(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """debug/info/warning/error map to themselves, aliases to theirs, the unknown to info."""
        mapping = {
            "debug": "debug",
            "info": "info",
            "msg": "info",
            "warning": "warning",
            "warn": "warning",
            "error": "error",
            "exception": "error",
            "critical": "error",
            "fatal": "error",
            "trace": "info",
        }
        persist = PersistToLlamaLog(llama, default_category=Category.UPDATED)
        for method_name in mapping:
            persist(None, method_name, {"event": method_name})
        assert llama.flush(timeout=10)
        assert {r["message"]: r["level"] for r in rows(dsn, schema)} == mapping

    def test_an_exception_is_stored_as_traceback_text(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """log.exception() stores level error and the traceback under details.exception."""
        log, capture = structlog_logger(PersistToLlamaLog(llama))
        try:
            raise RuntimeError("lyrics service timed out")
        except RuntimeError:
            log.exception("enrichment failed", category="failed", entity=("track", 9))
        assert llama.flush(timeout=10)
        (row,) = rows(dsn, schema)
        assert (row["category"], row["level"]) == ("FAILED", "error")
        exception = row["details"]["exception"]
        assert exception.startswith("Traceback (most recent call last):")
        assert exception.endswith("RuntimeError: lyrics service timed out")
        ((_, event),) = capture.entries
        assert event["exc_info"] is True  # rendering is left to the processors after it

    def test_a_message_key_is_an_ordinary_detail(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """A ``message`` key (e.g. from ECS-style logging) is an ordinary detail: log()
        takes its category and message positionally only."""
        log, _ = structlog_logger(PersistToLlamaLog(llama))
        log.info("album created", category="created", message="as rendered elsewhere")
        assert llama.flush(timeout=10)
        (row,) = rows(dsn, schema)
        assert row["message"] == "album created"
        assert row["details"] == {"message": "as rendered elsewhere"}

    @pytest.mark.parametrize(
        "bad",
        [{"category": "deleted"}, {"category": "created", "entity": "album 12"}],
        ids=["unknown-category", "malformed-entity"],
    )
    def test_a_bad_category_or_entity_raises_at_the_call(
        self, llama: LlamaLogger, bad: dict[str, Any]
    ) -> None:
        """A bad category or entity is a programming error: ValueError reaches the caller."""
        log, capture = structlog_logger(PersistToLlamaLog(llama))
        with pytest.raises(ValueError, match=r"category|entity"):
            log.info("album created", **bad)
        assert capture.entries == []
        assert llama.stats()["enqueued"] == 0

    def test_an_unknown_default_category_fails_at_construction(self, llama: LlamaLogger) -> None:
        with pytest.raises(ValueError, match="default_category"):
            PersistToLlamaLog(llama, default_category="deleted")

    def test_not_details_names_the_documented_keys(self) -> None:
        assert {
            "category",
            "entity",
            "related",
            "event",
            "level",
            "timestamp",
            *JOB_KEYS,
        } <= NOT_DETAILS


# --- stdlib logging ------------------------------------------------------------------


class RecordingHandler(LlamaLogHandler):
    """A LlamaLogHandler that keeps the records it passed to handleError."""

    def __init__(self, llama_logger: LlamaLogger, **kwargs: Any) -> None:
        super().__init__(llama_logger, **kwargs)
        self.errors: list[tuple[logging.LogRecord, BaseException | None]] = []

    def handleError(self, record: logging.LogRecord) -> None:
        self.errors.append((record, sys.exc_info()[1]))


@pytest.fixture
def worker_logger() -> Iterator[logging.Logger]:
    """A private stdlib logger that does not propagate; its handlers are removed afterwards."""
    logger = logging.getLogger(f"tests.worker.{uuid.uuid4().hex[:8]}")
    logger.setLevel(1)
    logger.propagate = False
    yield logger
    for handler in list(logger.handlers):
        if isinstance(handler, LlamaLogHandler):
            logger.removeHandler(handler)


class TestLlamaLogHandler:
    def test_stores_records_with_extra_in_the_current_job(
        self, llama: LlamaLogger, worker_logger: logging.Logger, dsn: str, schema: str
    ) -> None:
        """category/entity/related from extra go to columns; other extras and the logger name
        to details; the message is formatted with its args."""
        worker_logger.addHandler(RecordingHandler(llama))
        with llama.job("import-album") as root:
            worker_logger.info(
                "album %s created",
                12,
                extra={"category": "created", "entity": ("album", 12), "source": "musicbrainz"},
            )
            with llama.job("link-artist") as child:
                worker_logger.info(
                    "artist linked",
                    extra={
                        "category": Category.LINKED,
                        "entity": Entity("artist", "7"),
                        "related": ("album", 12),
                    },
                )
        assert llama.flush(timeout=10)
        created, linked = rows(dsn, schema)
        assert job_columns(created) == (root.job_id, None, root.job_id, "import-album")
        assert job_columns(linked) == (child.job_id, root.job_id, root.job_id, "link-artist")
        assert (created["category"], created["message"]) == ("CREATED", "album 12 created")
        assert (created["entity_type"], created["entity_id"]) == ("album", "12")
        assert created["details"] == {"source": "musicbrainz", "logger": worker_logger.name}
        assert linked["category"] == "LINKED"
        assert (linked["entity_type"], linked["entity_id"]) == ("artist", "7")
        assert (linked["related_type"], linked["related_id"]) == ("album", "12")
        assert linked["details"] == {"logger": worker_logger.name}

    def test_levels_are_mapped_by_range(
        self, llama: LlamaLogger, worker_logger: logging.Logger, dsn: str, schema: str
    ) -> None:
        """Below INFO is debug, below WARNING info, below ERROR warning, from ERROR up error."""
        worker_logger.addHandler(RecordingHandler(llama, default_category="updated"))
        expected = {
            5: "debug",
            logging.DEBUG: "debug",
            15: "debug",  # a level counts as the named level at or below it
            logging.INFO: "info",
            25: "info",
            logging.WARNING: "warning",
            35: "warning",
            logging.ERROR: "error",
            logging.CRITICAL: "error",
            60: "error",
        }
        for levelno in expected:
            worker_logger.log(levelno, str(levelno))
        assert llama.flush(timeout=10)
        assert {int(r["message"]): r["level"] for r in rows(dsn, schema)} == expected

    def test_the_handler_level_filters_records(
        self, llama: LlamaLogger, worker_logger: logging.Logger, dsn: str, schema: str
    ) -> None:
        worker_logger.addHandler(LlamaLogHandler(llama, level=logging.WARNING))
        worker_logger.info("not stored", extra={"category": "updated"})
        worker_logger.warning("stored", extra={"category": "updated"})
        assert llama.flush(timeout=10)
        assert [r["message"] for r in rows(dsn, schema)] == ["stored"]

    def test_an_exception_is_stored_as_traceback_text(
        self, llama: LlamaLogger, worker_logger: logging.Logger, dsn: str, schema: str
    ) -> None:
        worker_logger.addHandler(RecordingHandler(llama))
        try:
            raise RuntimeError("lyrics service timed out")
        except RuntimeError:
            worker_logger.exception("enrichment failed", extra={"category": "failed"})
        assert llama.flush(timeout=10)
        (row,) = rows(dsn, schema)
        assert (row["category"], row["level"], row["message"]) == (
            "FAILED",
            "error",
            "enrichment failed",
        )
        assert row["details"]["exception"].startswith("Traceback (most recent call last):")
        assert row["details"]["exception"].endswith("RuntimeError: lyrics service timed out")

    def test_plain_records_are_stored_as_noted_unless_default_category_says_otherwise(
        self, llama: LlamaLogger, worker_logger: logging.Logger, dsn: str, schema: str
    ) -> None:
        """A record without a category is NOTED by default, default_category's otherwise;
        default_category=None stores only records with a category."""
        for default in (Category.NOTED, None, Category.SKIPPED):
            handler = RecordingHandler(llama, default_category=default)
            worker_logger.addHandler(handler)
            worker_logger.info("plain line, default %s", default)
            worker_logger.info("own category wins", extra={"category": "matched"})
            worker_logger.removeHandler(handler)
        noted = RecordingHandler(llama)  # the default
        worker_logger.addHandler(noted)
        worker_logger.warning("plain line, no default_category given")
        assert llama.flush(timeout=10)
        assert [(r["category"], r["level"], r["message"]) for r in rows(dsn, schema)] == [
            ("NOTED", "info", "plain line, default NOTED"),
            ("MATCHED", "info", "own category wins"),
            ("MATCHED", "info", "own category wins"),
            ("SKIPPED", "info", "plain line, default SKIPPED"),
            ("MATCHED", "info", "own category wins"),
            ("NOTED", "warning", "plain line, no default_category given"),
        ]
        assert noted.errors == []

    def test_a_third_party_record_is_noted_without_its_private_extra(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """urllib3's retry warning, logged as urllib3 logs it (its private extra key
        ``__urllib3-retry-warning``), through a handler on the library's logger: a NOTED
        warning in the current job, its logger's name its only detail. Public extras of a
        third party (Celery's ``data``) are kept."""
        handler = RecordingHandler(llama, level=logging.WARNING)
        third_party = logging.getLogger(f"urllib3.connectionpool.{uuid.uuid4().hex[:8]}")
        third_party.addHandler(handler)
        try:
            with llama.job("fetch-cover") as job:
                urllib3_like_retry_warning(third_party)
                third_party.warning("Task %s failed", "t1", extra={"data": {"id": "t1"}})
                third_party.info("below the handler's level: not stored")
        finally:
            third_party.removeHandler(handler)
        assert llama.flush(timeout=10)
        retry, task = rows(dsn, schema)
        assert (retry["category"], retry["level"], retry["job_id"]) == (
            "NOTED",
            "warning",
            job.job_id,
        )
        assert retry["message"] == (
            "Retrying (Retry(total=2, connect=None, read=None, redirect=None, status=None)) "
            "after connection broken by 'NewConnectionError('timed out')': /covers/12.jpg"
        )
        assert retry["details"] == {"logger": third_party.name}
        assert task["details"] == {"data": {"id": "t1"}, "logger": third_party.name}
        assert handler.errors == []

    def test_records_of_llamaloggers_own_loggers_are_never_stored(
        self, llama: LlamaLogger, dsn: str, schema: str
    ) -> None:
        """The library's diagnostics ("llamalogger", "llamalogger.*") are ignored, others not."""
        handler = RecordingHandler(llama, default_category="failed")
        for name in ("llamalogger", "llamalogger.writer", "llamaloggers", "app.llamalogger"):
            handler.handle(
                logging.makeLogRecord({"name": name, "msg": name, "levelno": logging.ERROR})
            )
        assert llama.flush(timeout=10)
        assert [r["message"] for r in rows(dsn, schema)] == ["llamaloggers", "app.llamalogger"]
        assert handler.errors == []

    @pytest.mark.parametrize(
        ("args", "extra"),
        [
            ((), {"category": "deleted"}),
            ((), {"category": "created", "entity": "album 12"}),
            ((), {"category": "linked", "related": ("album",)}),
            (("not a number",), {"category": "created"}),
        ],
        ids=["unknown-category", "malformed-entity", "malformed-related", "bad-format-args"],
    )
    def test_emit_never_raises_errors_go_to_handle_error(
        self,
        llama: LlamaLogger,
        worker_logger: logging.Logger,
        args: tuple[Any, ...],
        extra: dict[str, Any],
    ) -> None:
        """A bad category, entity or format is reported through handleError, never raised."""
        handler = RecordingHandler(llama)
        # Straight to the handler: pytest's own capture handler would raise on a bad format.
        record = worker_logger.makeRecord(
            worker_logger.name,
            logging.INFO,
            __file__,
            1,
            "album %d created",
            args,
            None,
            extra=extra,
        )
        handler.handle(record)  # must not raise
        ((failed, error),) = handler.errors
        assert failed is record
        assert isinstance(error, ValueError | TypeError)
        assert llama.stats()["enqueued"] == 0

    def test_extras_named_like_logs_own_keywords_are_stored_renamed(
        self, llama: LlamaLogger, worker_logger: logging.Logger, dsn: str, schema: str
    ) -> None:
        """extra={"level": ...} would clash with log(level=); it is kept as ``level_``."""
        handler = RecordingHandler(llama)
        worker_logger.addHandler(handler)
        worker_logger.info("retagged", extra={"category": "updated", "level": "gold"})
        assert llama.flush(timeout=10)
        (row,) = rows(dsn, schema)
        assert (row["level"], row["details"]) == (
            "info",
            {"level_": "gold", "logger": worker_logger.name},
        )
        assert handler.errors == []

    def test_an_unknown_default_category_fails_at_construction(self, llama: LlamaLogger) -> None:
        with pytest.raises(ValueError, match="default_category"):
            LlamaLogHandler(llama, default_category="deleted")


def urllib3_like_retry_warning(logger: logging.Logger) -> None:
    """The warning urllib3's connection pool logs before a retry, with its arguments and its
    private extra key (urllib3/connectionpool.py)."""
    logger.warning(
        "Retrying (%r) after connection broken by '%r': %s",
        Retry(total=2),
        NewConnectionError("timed out"),
        "/covers/12.jpg",
        extra={"__urllib3-retry-warning": {"host": "covers.example"}},
    )


class Retry:
    """Stands for urllib3's Retry in its warning: only its repr is used."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __repr__(self) -> str:
        return f"Retry(total={self.total}, connect=None, read=None, redirect=None, status=None)"


class NewConnectionError(OSError):
    """Stands for urllib3's NewConnectionError in its warning."""


def test_importing_the_integrations_package_does_not_import_structlog() -> None:
    """Only llamalogger.integrations.structlog needs structlog; the package and the
    logging handler must import without it."""
    code = (
        "import sys, llamalogger.integrations, llamalogger.integrations.logging; "
        "assert 'structlog' not in sys.modules, 'structlog was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
