"""The task API's pieces that need no database: reading a parent from untrusted headers,
and the Dramatiq middleware's sending side."""

from __future__ import annotations

from typing import Any

import pytest

from llamalogger import JobContext, LlamaLogger
from llamalogger._context import JobScope
from llamalogger.testing import capture_events

HEADERS = JobContext.HEADERS


class TestFromUntrustedHeaders:
    def test_what_to_headers_writes_comes_back(self) -> None:
        """A context survives to_headers/from_untrusted_headers unchanged."""
        context = JobContext(job_id="child", name="link", parent_job_id="album", root_job_id="r")
        assert JobContext.from_untrusted_headers(context.to_headers()) == context
        assert set(context.to_headers()) == set(HEADERS)

    def test_keys_match_in_any_case_and_others_are_ignored(self) -> None:
        """Header names are case-insensitive; a message's other headers do not matter."""
        headers = {"LlamaLog-Job-Id": "a", "id": "celery-id", 7: "seven", "argsrepr": "()"}
        assert JobContext.from_untrusted_headers(headers) == JobContext(job_id="a")

    @pytest.mark.parametrize(
        "headers",
        [
            None,
            "llamalog-job-id",
            ["llamalog-job-id", "a"],
            {},
            {"llamalog-root-job-id": "r"},  # no job id
            {"llamalog-job-id": ""},
            {"llamalog-job-id": 12},
            {"llamalog-job-id": "x" * 101},
            {"llamalog-job-id": "a\x00b"},
            {"llamalog-job-id": "a", "llamalog-parent-job-id": ["b"]},
            {"llamalog-job-id": "a", "llamalog-root-job-id": "\ud800"},
        ],
        ids=repr,
    )
    def test_anything_that_carries_no_valid_job_is_none(self, headers: object) -> None:
        """Not a mapping, no job id, or an id that is no valid job id: None, never an error."""
        assert JobContext.from_untrusted_headers(headers) is None

    def test_a_long_or_odd_name_is_cut_or_dropped(self) -> None:
        """The name is only a label: cut to the limit, or dropped when it is no str."""
        long = JobContext.from_untrusted_headers({HEADERS[0]: "a", HEADERS[3]: "n" * 5000})
        assert long is not None
        assert long.name == "n" * 200
        odd = JobContext.from_untrusted_headers({HEADERS[0]: "a", HEADERS[3]: {"x": 1}})
        assert odd == JobContext(job_id="a")


class TestDramatiqSending:
    @pytest.fixture
    def broker(self) -> Any:
        pytest.importorskip("dramatiq")
        from dramatiq.brokers.stub import StubBroker

        from llamalogger.integrations.dramatiq import instrument

        broker = StubBroker()
        broker.declare_queue("q")
        with capture_events() as capture:  # made at once by instrument; sending logs nothing
            instrument(broker, capture.logger)
            yield broker
            broker.close()
            assert capture.logger.flush(timeout=5)
            assert capture.events == []

    def send(self, broker: Any, message_id: str | None = None, **options: Any) -> Any:
        from dramatiq import Message

        message = Message("q", "fetch_cover", (), {}, options)
        if message_id is not None:
            message = message.copy(message_id=message_id)
        return broker.enqueue(message)

    def test_a_message_sent_inside_a_job_carries_it(self, broker: Any) -> None:
        """Inside a job the message's options name it; outside any job they do not."""
        from llamalogger.integrations.dramatiq import OPTION_KEY

        assert OPTION_KEY not in self.send(broker).options
        with JobScope("import-album", None, None) as job:
            sent = self.send(broker)
        assert sent.options[OPTION_KEY] == job.to_headers()

    def test_the_senders_choice_and_a_retry_are_left_alone(self, broker: Any) -> None:
        """Options the sender set are never overwritten; a message re-sent under its own
        job (a retry) is not made its own parent."""
        from llamalogger.integrations.dramatiq import OPTION_KEY

        with JobScope("import-album", None, None) as job:
            chosen = self.send(broker, **{OPTION_KEY: {"llamalog-job-id": "elsewhere"}})
            retried = self.send(broker, message_id=job.job_id)
        assert chosen.options[OPTION_KEY] == {"llamalog-job-id": "elsewhere"}
        assert OPTION_KEY not in retried.options

    def test_instrument_twice_is_one_middleware(self, broker: Any) -> None:
        """The same logger again returns the middleware; another logger is refused."""
        from llamalogger.integrations.dramatiq import LlamaMiddleware, instrument

        first = broker.middleware[0]
        assert isinstance(first, LlamaMiddleware)
        assert instrument(broker, first.source) is first
        assert sum(isinstance(m, LlamaMiddleware) for m in broker.middleware) == 1
        with pytest.raises(ValueError, match="another logger"):
            instrument(broker, LlamaLogger)
        with pytest.raises(TypeError, match="LlamaLogger or a callable"):
            LlamaMiddleware("postgresql://db")  # type: ignore[arg-type]


class TestPropagationIsUntrusted:
    """Headers come from whoever can publish (issue 18, point 6)."""

    def test_from_headers_takes_a_mapping_of_valid_strings(self) -> None:
        with pytest.raises(TypeError, match="mapping"):
            JobContext.from_headers(None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="job name must be a str"):
            JobContext.from_headers({"llamalog-job-id": "J", "llamalog-job-name": 42})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="longer than"):
            JobContext.from_headers({"llamalog-job-id": "J", "llamalog-job-name": "x" * 10**7})
        with pytest.raises(ValueError, match="NUL"):
            JobContext.from_headers({"llamalog-job-id": "J", "llamalog-job-name": "a\x00b"})

    def test_a_job_is_never_its_own_parent_nor_its_own_root_under_a_parent(self) -> None:
        with pytest.raises(ValueError, match="its own parent"):
            JobContext.from_headers({"llamalog-job-id": "J", "llamalog-parent-job-id": "J"})
        assert (
            JobContext.from_untrusted_headers(
                {"llamalog-job-id": "J", "llamalog-parent-job-id": "J"}
            )
            is None
        )
        # A parent without a root: the parent is taken as the root, never the job itself.
        context = JobContext.from_headers({"llamalog-job-id": "J", "llamalog-parent-job-id": "P"})
        assert (context.parent_job_id, context.root_job_id) == ("P", "P")
        assert JobContext(job_id="J", parent_job_id="P").root_job_id == "P"

    def test_a_root_without_a_parent_is_refused_unless_it_is_the_job_itself(self) -> None:
        """Headers naming a root but no parent hide the job's place: from_headers refuses
        them; from_untrusted_headers gives None and says why to ``on_refused``."""
        rootless = {"llamalog-job-id": "J", "llamalog-root-job-id": "R"}
        with pytest.raises(ValueError, match="no parent"):
            JobContext.from_headers(rootless)
        reasons: list[str] = []
        assert JobContext.from_untrusted_headers(rootless, on_refused=reasons.append) is None
        assert len(reasons) == 1
        assert "no parent" in reasons[0]
        root = JobContext.from_headers({"llamalog-job-id": "R", "llamalog-root-job-id": "R"})
        assert (root.parent_job_id, root.root_job_id) == (None, "R")

    def test_what_to_headers_writes_from_headers_takes(self) -> None:
        """Every job a scope makes, root or nested at any depth, round-trips its headers."""
        with (
            JobScope("a", None, None) as a,
            JobScope("b", None, None) as b,
            JobScope("c", None, None) as c,
        ):
            for context in (a, b, c):
                assert JobContext.from_headers(context.to_headers()) == context

    def test_refusals_are_reported_only_for_headers_that_carry_a_job(self) -> None:
        reasons: list[str] = []
        for headers in (None, {}, {"other": "x"}, {"llamalog-job-id": "J"}):
            JobContext.from_untrusted_headers(headers, on_refused=reasons.append)
        assert reasons == []
        JobContext.from_untrusted_headers(
            {"llamalog-job-id": "J", "llamalog-parent-job-id": "J"}, on_refused=reasons.append
        )
        assert len(reasons) == 1
        assert "own parent" in reasons[0]

    def test_a_job_id_equal_to_its_parents_is_refused_at_the_api(self) -> None:
        with capture_events() as capture:
            logger = capture.logger
            with pytest.raises(ValueError, match="its own parent"):
                logger.job("x", job_id="J", parent=JobContext(job_id="J"))
            with logger.job("outer", job_id="K"), pytest.raises(ValueError, match="own parent"):
                logger.job("inner", job_id="K").__enter__()

    def test_a_task_that_names_itself_as_its_parent_keeps_that_jobs_parent(self) -> None:
        """A message whose headers name the task itself (30 such were sent to a prefork
        worker in issue 18): no row has parent_job_id == job_id."""
        with capture_events() as capture:
            logger = capture.logger
            itself = JobContext.from_untrusted_headers(
                {"llamalog-job-id": "T", "llamalog-parent-job-id": "P", "llamalog-root-job-id": "R"}
            )
            with logger.task_job("fetch", job_id="T", parent=itself):
                logger.created(("album", 1))
            rootless = JobContext(job_id="U")
            with logger.task_job("fetch", job_id="U", parent=rootless):
                logger.created(("album", 2))
            assert logger.flush(5)
            events = [(e.job_id, e.parent_job_id, e.root_job_id) for e in capture.events]
            assert events == [("T", "P", "R"), ("U", None, "U")]
            assert all(job.parent_job_id != job.job_id for job in capture.jobs)
