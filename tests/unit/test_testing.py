"""``llamalogger.testing``: events captured in memory, through the real logger and writer."""

from __future__ import annotations

import datetime as dt
import threading

import attrs
import pytest

from llamalogger import Category, ConfigurationError, JobContext, LlamaLogger
from llamalogger.testing import CapturedEvent, capture_events


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
