"""``llamalogger.testing``: events captured in memory, through the real logger and writer."""

from __future__ import annotations

import datetime as dt
import threading

import attrs
import pytest

from llamalogger import Category, ConfigurationError, JobContext, LlamaLogger
from llamalogger._records import JOB, PG_EPOCH_US, JobStatus
from llamalogger.testing import CapturedEvent, CapturedJob, EventCapture, capture_events


def put_job(
    capture: EventCapture,
    job_id: str,
    status: str = "succeeded",
    *,
    error: tuple[str, str] | None = None,
    job_name: str = "enrich-track",
    details: dict[str, object] | None = None,
) -> None:
    """Queue a job record by hand, as the facade does when a job ends."""
    ended = 1_700_000_001_000_000 - PG_EPOCH_US
    error_type, error_message = error if error is not None else (None, None)
    fields = (
        ended, JOB, status, error_message, job_id, "parent-1", "root-1", job_name, "track", "9",
        error_type, ended - 1_500_000, 2, 4242, "worker-1",
    )  # fmt: skip
    capture.logger._put(fields, details)  # the facade's own way in


class TestWhatIsCaptured:
    def test_events_carry_the_columns_of_llama_log_and_the_dual_hierarchy(self) -> None:
        before = dt.datetime.now(dt.UTC)
        with capture_events() as capture:
            logger = capture.logger
            with logger.job("import-album") as root:
                logger.created(("album", 12), title="Blue")
                with logger.job("link-artist") as child:
                    logger.linked(("artist", 7), ("album", 12))
            logger.log("updated", "catalogue reindexed", level="warning")
        after = dt.datetime.now(dt.UTC)
        created, linked, outside = capture.events
        assert attrs.asdict(created, recurse=False) | {"logged_at": None} == {
            "logged_at": None,
            "category": "CREATED",
            "level": "info",
            "message": "album 12 created",
            "job_id": root.job_id,
            "parent_job_id": None,
            "root_job_id": root.job_id,
            "job_name": "import-album",
            "entity_type": "album",
            "entity_id": "12",
            "related_type": None,
            "related_id": None,
            "details": {"title": "Blue"},
        }
        assert (linked.job_id, linked.parent_job_id, linked.root_job_id) == (
            child.job_id,
            root.job_id,
            root.job_id,
        )
        assert (linked.related_type, linked.related_id, linked.message) == (
            "album",
            "12",
            "artist 7 linked to album 12",
        )
        assert (outside.job_id, outside.root_job_id, outside.level) == (None, None, "warning")
        assert outside.category is Category.UPDATED
        assert before <= created.logged_at <= linked.logged_at <= outside.logged_at <= after

    def test_a_job_from_another_process_keeps_its_parent_and_root(self) -> None:
        parent = JobContext.from_headers(
            {
                "llamalog-job-id": "task-2",
                "llamalog-parent-job-id": "task-1",
                "llamalog-root-job-id": "root-1",
            }
        )
        with capture_events() as capture, capture.logger.job("transcode", parent=parent):
            capture.logger.log("enriched", "cover art found")
        (event,) = capture.events
        assert (event.parent_job_id, event.root_job_id) == ("task-2", "root-1")

    def test_a_job_left_by_an_exception_records_one_failed_event(self) -> None:
        with capture_events() as capture:
            with pytest.raises(LookupError), capture.logger.job("fetch-cover"):
                raise LookupError("cover art not found")
            assert capture.logger.flush(5)
            (event,) = capture.events
        assert (event.category, event.level, event.message) == (
            "FAILED",
            "error",
            "LookupError: cover art not found",
        )
        assert event.details is not None
        assert event.details["exception_type"] == "LookupError"

    def test_details_are_stored_as_jsonb_would_return_them(self) -> None:
        with capture_events() as capture:
            capture.logger.log(
                "matched",
                "by name",
                when=dt.date(2024, 5, 1),
                score=0.5,
                tags=("a", "b"),
                unknown=object(),
            )
        (event,) = capture.events
        assert event.details is not None
        assert event.details["when"] == "2024-05-01"
        assert (event.details["score"], event.details["tags"]) == (0.5, ["a", "b"])
        assert event.details["unknown"].startswith("<object object at ")

    def test_what_postgresql_refuses_is_cleaned_as_the_writer_cleans_it_for_postgresql(
        self,
    ) -> None:
        with capture_events() as capture:
            capture.logger.log("updated", "nul \x00 here", note="lone \ud800")
            capture.logger.log("updated", "fine")
            assert capture.logger.flush(5)
            stats = capture.logger.stats()
        refused, fine = capture.events
        assert refused.message == "nul \ufffd here"
        assert refused.details == {"note": "lone \ufffd"}
        assert fine.message == "fine"
        assert (stats["sanitised"], stats["written"], stats["rejected"]) == (1, 2, 0)


class TestJobRecords:
    def test_job_records_are_captured_with_the_columns_of_llama_job(self) -> None:
        with capture_events() as capture:
            capture.logger.created(("track", 9))
            put_job(capture, "job-1", "failed", error=("KeyError", "'isrc'"), details={"q": 1})
            capture.logger.created(("track", 10))
            assert capture.logger.flush(5)
            stats = capture.logger.stats()
        [job] = capture.jobs
        assert isinstance(job, CapturedJob)
        assert attrs.asdict(job) == {
            "job_id": "job-1",
            "parent_job_id": "parent-1",
            "root_job_id": "root-1",
            "job_name": "enrich-track",
            "entity_type": "track",
            "entity_id": "9",
            "status": "failed",
            "attempt": 2,
            "started_at": dt.datetime(2023, 11, 14, 22, 13, 19, 500000, tzinfo=dt.UTC),
            "ended_at": dt.datetime(2023, 11, 14, 22, 13, 21, tzinfo=dt.UTC),
            "error_type": "KeyError",
            "error_message": "'isrc'",
            "pid": 4242,
            "host": "worker-1",
            "details": {"q": 1},
        }
        assert job.status is JobStatus.FAILED
        assert [event.entity_id for event in capture.events] == ["9", "10"]
        assert (stats["enqueued"], stats["written"], stats["jobs"]) == (3, 3, 1)

    def test_what_postgresql_refuses_in_a_job_record_is_cleaned_or_dead_lettered(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """NUL and lone surrogates are cleaned as for PostgreSQL; a status outside the
        table's CHECK is refused: that record alone is rejected, its batch-mates kept."""
        with capture_events(flush_interval=60) as capture:
            put_job(capture, "job-1", "failed", error=("ValueError", "nul \x00 here"))
            put_job(capture, "job-2", job_name="lone \ud800")
            put_job(capture, "job-3", "running")
            capture.logger.created(("track", 1))
            assert capture.logger.flush(5)
            stats = capture.logger.stats()
        assert [(job.job_id, job.error_message, job.job_name) for job in capture.jobs] == [
            ("job-1", "nul \ufffd here", "enrich-track"),
            ("job-2", None, "lone \ufffd"),
        ]
        assert [event.entity_id for event in capture.events] == ["1"]
        assert (stats["written"], stats["rejected"], stats["sanitised"]) == (3, 1, 2)
        assert any("rejected a job record" in r.getMessage() for r in caplog.records)

    def test_clear_forgets_job_records_too(self) -> None:
        with capture_events() as capture:
            put_job(capture, "job-1")
            assert capture.logger.flush(5)
            capture.clear()
            put_job(capture, "job-2")
        assert [job.job_id for job in capture.jobs] == ["job-2"]


class TestLifeCycle:
    def test_the_logger_is_a_real_llamalogger(self) -> None:
        with capture_events(schema="catalogue") as capture:
            assert isinstance(capture.logger, LlamaLogger)
            assert capture.logger.schema == "catalogue"
            assert "catalogue" in repr(capture.logger)

    def test_events_are_visible_once_flush_returns_true(self) -> None:
        # A long flush interval: only flush() makes the writer deliver.
        with capture_events(flush_interval=60) as capture:
            capture.logger.created(("track", 1))
            assert capture.logger.flush(5)
            assert [event.entity_id for event in capture.events] == ["1"]
            capture.logger.created(("track", 2))
        assert [event.entity_id for event in capture.events] == ["1", "2"]

    def test_clear_forgets_what_was_delivered(self) -> None:
        with capture_events() as capture:
            capture.logger.created(("track", 1))
            assert capture.logger.flush(5)
            capture.clear()
            capture.logger.created(("track", 2))
        assert [event.entity_id for event in capture.events] == ["2"]

    def test_leaving_the_block_closes_the_logger(self) -> None:
        with capture_events() as capture:
            pass
        capture.logger.created(("track", 1))
        assert capture.logger.stats()["dropped"] == 1
        assert capture.events == []

    def test_events_of_many_threads_are_all_captured(self) -> None:
        def work(number: int) -> None:
            with capture.logger.job(f"worker-{number}"):
                for item in range(500):
                    capture.logger.created(("track", item))

        with capture_events(batch_size=64) as capture:
            threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        events = capture.events
        assert len(events) == 2000
        assert {event.job_name for event in events} == {f"worker-{n}" for n in range(4)}
        assert all(isinstance(event, CapturedEvent) for event in events)

    @pytest.mark.parametrize("option", ["spill_dir", "dead_letter_path", "dsn", "pool"])
    def test_options_that_would_touch_disk_or_network_are_refused(self, option: str) -> None:
        with pytest.raises(ConfigurationError, match=option), capture_events(**{option: "x"}):
            pass

    def test_writer_options_are_validated_as_for_llamalogger(self) -> None:
        with pytest.raises(ConfigurationError, match="queue_size"), capture_events(queue_size=0):
            pass
