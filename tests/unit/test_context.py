"""The job context on its own: ids, nesting, restoration, headers, threads and tasks."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import attrs
import pytest

from llamalogger import JobContext, _context, bind_job, current_job, new_job_id
from llamalogger._context import JobScope


def job(name: str | None = None, **kwargs: object) -> JobScope:
    return JobScope(name, kwargs.get("job_id"), kwargs.get("parent"))  # type: ignore[arg-type]


class TestJobIds:
    def test_generated_ids_are_time_ordered_and_unique(self) -> None:
        """Ids generated one after another sort in creation order and never repeat."""
        ids = [new_job_id() for _ in range(10_000)]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)

    def test_ids_in_a_tight_loop_are_strictly_increasing(self) -> None:
        """100,000 ids made as fast as possible (many within one clock tick) each sort
        strictly after the one before."""
        ids = [new_job_id() for _ in range(100_000)]
        assert all(a < b for a, b in itertools.pairwise(ids))

    def test_ids_are_strictly_increasing_with_a_frozen_clock(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the clock does not advance at all, ids still sort in creation order, also
        past 4,096 ids in one millisecond (the sub-millisecond field carries over)."""
        frozen = 1_764_000_000_123_456_789
        monkeypatch.setattr(_context, "_last_stamp", 0)
        monkeypatch.setattr(_context, "_time_ns", lambda: frozen)
        ids = [new_job_id() for _ in range(10_000)]
        assert all(a < b for a, b in itertools.pairwise(ids))
        assert all(value[14] == "7" and value[19] in "89ab" for value in ids)
        millis = {int(value[:8] + value[9:13], 16) for value in ids}
        assert min(millis) == frozen // 1_000_000
        assert len(millis) == 3  # 10,000 ids at 4,096 per millisecond

    def test_ids_keep_increasing_when_the_clock_steps_back(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A clock set back (NTP) does not make a later id sort before an earlier one."""
        now = [1_764_000_000_000_000_000]
        monkeypatch.setattr(_context, "_last_stamp", 0)
        monkeypatch.setattr(_context, "_time_ns", lambda: now[0])
        before = new_job_id()
        now[0] -= 5_000_000_000
        assert new_job_id() > before

    def test_generated_ids_look_like_uuid7(self) -> None:
        value = new_job_id()
        assert len(value) == 36
        assert value[14] == "7"
        assert value[19] in "89ab"
        parsed = uuid.UUID(value)
        assert str(parsed) == value  # the canonical 8-4-4-4-12 lower-case text
        assert parsed.version == 7
        unix_ms = parsed.int >> 80
        assert abs(unix_ms - time.time() * 1000) < 60_000

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
    def test_the_kept_process_id_follows_a_fork(self) -> None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what the module believes, then leave at once
            os.write(write, f"{_context.current_pid()} {os.getpid()}".encode())
            os._exit(0)
        os.close(write)
        try:
            seen, actual = os.read(read, 100).decode().split()
        finally:
            os.close(read)
            os.waitpid(pid, 0)
        assert seen == actual == str(pid)
        assert _context.current_pid() == os.getpid()

    @pytest.mark.parametrize(
        ("bad", "words"),
        [
            ("", "empty"),
            ("x" * 101, "101 characters"),
            ("a\x00b", "NUL"),
            (42, "must be a str"),
            (b"bytes", "must be a str"),
            ("\ud800", "surrogate"),
        ],
    )
    def test_invalid_job_id_raises_value_error_naming_the_problem(
        self, bad: object, words: str
    ) -> None:
        with pytest.raises(ValueError, match=words):
            job("x", job_id=bad)

    def test_job_id_of_exactly_100_characters_with_quotes_and_unicode_is_valid(self) -> None:
        value = ("'\"ü🎵\\" * 20)[:100]
        assert len(value) == 100
        with job("x", job_id=value) as ctx:
            assert ctx.job_id == value


class TestNesting:
    def test_outside_any_job_there_is_no_current_job(self) -> None:
        assert current_job() is None

    def test_root_job_has_no_parent_and_is_its_own_root(self) -> None:
        with job("import") as ctx:
            assert current_job() is ctx
            assert ctx.parent_job_id is None
            assert ctx.root_job_id == ctx.job_id
            assert ctx.name == "import"

    def test_nested_job_points_to_enclosing_job_and_its_root(self) -> None:
        with job("outer") as outer, job("middle") as middle, job("inner") as inner:
            assert middle.parent_job_id == outer.job_id
            assert inner.parent_job_id == middle.job_id
            assert inner.root_job_id == middle.root_job_id == outer.job_id

    def test_explicit_parent_overrides_the_enclosing_job(self) -> None:
        remote = JobContext(job_id="remote-child", parent_job_id="remote-root", root_job_id="r0")
        with job("local"), job("handoff", parent=remote) as ctx:
            assert ctx.parent_job_id == "remote-child"
            assert ctx.root_job_id == "r0"

    def test_entered_contexts_are_the_same_as_validated_ones(self) -> None:
        # Entering a job builds its context without re-running the validators; what it
        # builds must be indistinguishable from a context made the public way.
        with job("outer") as outer, job("inner") as inner:
            for ctx in (outer, inner, outer.child("side")):
                rebuilt = JobContext(
                    job_id=ctx.job_id,
                    name=ctx.name,
                    parent_job_id=ctx.parent_job_id,
                    root_job_id=ctx.root_job_id,
                )
                assert ctx == rebuilt
                assert hash(ctx) == hash(rebuilt)
                assert repr(ctx) == repr(rebuilt)
                with pytest.raises(attrs.exceptions.FrozenInstanceError):
                    ctx.job_id = "changed"  # type: ignore[misc]
                assert attrs.evolve(ctx, name="renamed").name == "renamed"
        assert inner.parent_job_id == outer.job_id

    def test_the_fast_constructor_sets_every_field_of_job_context(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # _checked_already fills a JobContext field by field, skipping the validators: a
        # field added to JobContext but not set there would stay unset on the hot path.
        set_names: list[str] = []
        real_set = _context._set_field

        def recording_set(obj: object, name: str, value: object) -> None:
            set_names.append(name)
            real_set(obj, name, value)

        monkeypatch.setattr(_context, "_set_field", recording_set)
        built = _context._checked_already("j", "name", "p", "r")
        assert set_names == [field.name for field in attrs.fields(JobContext)]
        assert built == JobContext(job_id="j", name="name", parent_job_id="p", root_job_id="r")

    def test_child_with_an_explicit_id_still_validates_it(self) -> None:
        parent = JobContext(job_id="p")
        with pytest.raises(ValueError, match="job_id"):
            parent.child("x", job_id="")

    def test_parent_must_be_a_job_context(self) -> None:
        with pytest.raises(TypeError, match="JobContext"):
            job("x", parent={"llamalog-job-id": "a"})


class TestRestoration:
    def test_exit_restores_enclosing_job_after_an_exception(self) -> None:
        with job("outer") as outer:
            with pytest.raises(KeyError), job("inner"):
                raise KeyError("boom")
            assert current_job() is outer
        assert current_job() is None

    def test_decorated_function_restores_context_after_raising(self) -> None:
        @job("failing")
        def fail() -> None:
            assert current_job() is not None
            raise RuntimeError("no")

        with pytest.raises(RuntimeError):
            fail()
        assert current_job() is None

    def test_each_call_of_a_decorated_function_is_a_new_job(self) -> None:
        seen: list[JobContext] = []

        @job("step")
        def step() -> None:
            ctx = current_job()
            assert ctx is not None
            seen.append(ctx)

        with job("outer") as outer:
            step()
            step()
        assert len({ctx.job_id for ctx in seen}) == 2
        assert all(ctx.parent_job_id == outer.job_id for ctx in seen)

    def test_decorated_generator_holds_the_job_only_while_it_runs(self) -> None:
        """The consumer of a decorated generator never sees the generator's job."""
        inside: list[JobContext | None] = []

        @job("producer")
        def produce() -> object:
            for value in range(3):
                inside.append(current_job())
                yield value
            return "done"

        with job("consumer") as consumer:
            for _ in produce():
                assert current_job() is consumer
        assert all(ctx is not None and ctx.name == "producer" for ctx in inside)
        assert len({ctx.job_id for ctx in inside if ctx}) == 1
        assert inside[0] is not None
        assert inside[0].parent_job_id == consumer.job_id

    def test_decorated_generator_returns_value_and_closes_inside_its_job(self) -> None:
        closed_in: list[JobContext | None] = []

        @job("producer")
        def produce() -> object:
            try:
                yield 1
                yield 2
            finally:
                closed_in.append(current_job())
            return "unused"

        gen = produce()
        assert next(gen) == 1  # type: ignore[call-overload]
        gen.close()  # type: ignore[attr-defined]
        assert closed_in[0] is not None
        assert closed_in[0].name == "producer"
        assert current_job() is None

        @job("returns")
        def returns() -> object:
            yield 1
            return "value"

        def delegate() -> object:
            result = yield from returns()  # type: ignore[misc]
            return result

        runner = delegate()
        next(runner)  # type: ignore[call-overload]
        with pytest.raises(StopIteration) as stop:
            next(runner)  # type: ignore[call-overload]
        assert stop.value.value == "value"

    def test_with_block_inside_generator_restores_context_on_return(self) -> None:
        def produce() -> object:
            with job("inside-generator"):
                yield 1
            return None

        with job("outer") as outer:
            for _ in produce():  # type: ignore[attr-defined]
                pass
            assert current_job() is outer

    def test_generator_closed_from_another_context_restores_by_value(self) -> None:
        """Leaving a job block from a context other than its own does not raise.

        (A suspended `with job()` inside a generator is visible to its consumer: that is
        how context variables work, and why the decorator form runs generators in a
        private context. The scenario runs in a copy so the leak stays here.)
        """

        def produce() -> object:
            with job("inside-generator"):
                yield 1

        def scenario() -> None:
            gen = produce()
            next(gen)  # type: ignore[call-overload]
            # Closed from another context, as a garbage collector in another thread might.
            other = contextvars.Context()
            other.run(gen.close)  # type: ignore[attr-defined]
            assert other.run(current_job) is None

        contextvars.copy_context().run(scenario)
        assert current_job() is None

    def test_generator_closed_in_another_thread_leaves_that_threads_job_alone(self) -> None:
        """Closing a generator suspended inside `with job()` from another thread must not
        replace the job that thread is in."""

        def scan() -> object:
            with job("scan"):
                yield 1
                yield 2

        seen: list[str | None] = []

        def scenario() -> None:
            with job("import-album"):
                pages = scan()
                next(pages)  # type: ignore[call-overload]

            def other_worker() -> None:
                with job("transcode"):
                    pages.close()  # type: ignore[attr-defined]
                    ctx = current_job()
                    seen.append(ctx.name if ctx else None)
                seen.append(current_job().name if current_job() else None)  # type: ignore[union-attr]

            thread = threading.Thread(target=other_worker)
            thread.start()
            thread.join()

        contextvars.copy_context().run(scenario)
        assert seen == ["transcode", None]

    def test_one_scope_shared_by_tasks_that_leave_out_of_order(self) -> None:
        """Each task's exit undoes its own entry, even through a shared scope object."""
        shared = job("step")

        async def worker(name: str, first_in: asyncio.Event, a_done: asyncio.Event) -> tuple:
            with job(name) as outer:
                with shared:
                    if name == "A":
                        first_in.set()
                        await asyncio.sleep(0.01)  # B enters `shared` meanwhile; A leaves first
                    else:
                        await first_in.wait()
                        await a_done.wait()
                if name == "A":
                    a_done.set()
                after = current_job()
                return outer.name, after.name if after else None

        async def main() -> list[tuple]:
            first_in, a_done = asyncio.Event(), asyncio.Event()
            return await asyncio.gather(
                worker("A", first_in, a_done), worker("B", first_in, a_done)
            )

        assert asyncio.run(main()) == [("A", "A"), ("B", "B")]

    def test_async_job_is_restored_after_task_cancellation(self) -> None:
        async def main() -> None:
            started = asyncio.Event()

            @job("slow")
            async def slow() -> None:
                started.set()
                await asyncio.sleep(60)

            with job("outer") as outer:
                task = asyncio.create_task(slow())
                await started.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert current_job() is outer

        asyncio.run(main())
        assert current_job() is None

    def test_async_with_form(self) -> None:
        async def main() -> None:
            async with job("async-block") as ctx:
                assert current_job() is ctx
            assert current_job() is None

        asyncio.run(main())

    def test_async_generator_functions_are_refused_with_a_hint(self) -> None:
        async def agen() -> object:
            yield 1

        with pytest.raises(TypeError, match="async generator"):
            job("x")(agen)


class TestIsolation:
    def test_tasks_inherit_the_job_they_were_created_in_and_do_not_leak(self) -> None:
        async def child(results: list[JobContext | None]) -> None:
            with job("in-task"):
                await asyncio.sleep(0)
                results.append(current_job())
            results.append(current_job())

        async def main() -> None:
            results: list[JobContext | None] = []
            with job("outer") as outer:
                await asyncio.gather(child(results), child(results))
                assert current_job() is outer
            inner = [r for r in results if r is not None and r.name == "in-task"]
            assert len(inner) == 2
            assert all(r.parent_job_id == outer.job_id for r in inner)
            assert [r for r in results if r is outer] == [outer, outer]

        asyncio.run(main())

    def test_plain_threads_start_without_the_job(self) -> None:
        seen: list[JobContext | None] = []
        with job("outer"):
            thread = threading.Thread(target=lambda: seen.append(current_job()))
            thread.start()
            thread.join()
        assert seen == [None]

    def test_bind_job_carries_the_job_into_threads_and_executors(self) -> None:
        seen: list[JobContext | None] = []

        def work(_: int) -> str:
            with job("in-thread") as ctx:
                seen.append(ctx)
                return ctx.job_id

        with job("outer") as outer:
            thread = threading.Thread(target=bind_job(lambda: seen.append(current_job())))
            thread.start()
            thread.join()
            with ThreadPoolExecutor(max_workers=2) as pool:
                ids = list(pool.map(bind_job(work), range(4)))
        assert seen[0] is outer
        assert len(set(ids)) == 4
        assert all(ctx is not None and ctx.parent_job_id == outer.job_id for ctx in seen[1:])


class TestHeaders:
    def test_headers_round_trip(self) -> None:
        with job("outer"), job("inner") as ctx:
            headers = ctx.to_headers()
        assert all(isinstance(v, str) for v in headers.values())
        assert JobContext.from_headers(headers) == ctx

    def test_headers_are_matched_case_insensitively(self) -> None:
        ctx = JobContext.from_headers(
            {"LLAMALOG-JOB-ID": "a", "Llamalog-Parent-Job-Id": "p", "Llamalog-Root-Job-Id": "r"}
        )
        assert (ctx.job_id, ctx.root_job_id, ctx.parent_job_id) == ("a", "r", "p")

    def test_headers_without_job_id_or_with_bad_id_raise(self) -> None:
        with pytest.raises(ValueError, match="llamalog-job-id"):
            JobContext.from_headers({})
        with pytest.raises(ValueError, match="root_job_id"):
            JobContext.from_headers({"llamalog-job-id": "a", "llamalog-root-job-id": ""})

    def test_job_started_from_headers_continues_the_remote_tree(self) -> None:
        with job("producer") as producer:
            headers = producer.to_headers()
        with job("consumer", parent=JobContext.from_headers(headers)) as consumer:
            assert consumer.parent_job_id == producer.job_id
            assert consumer.root_job_id == producer.root_job_id
