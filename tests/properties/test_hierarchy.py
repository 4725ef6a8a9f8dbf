"""Invariants 1-8 of docs/design.md §3, searched by hypothesis through the real writer.

A generated *program* is a forest of jobs. Every job logs a few events and starts its
children in one of the ways users start work: a nested ``with``, a decorated function or
generator, a thread through ``bind_job``, an executor task, a plain thread that inherits
nothing, or an asyncio task. Some children name an explicit parent (headers, as if they ran
in another process), some leave their block by an exception or are cancelled.

While the program runs, the test records what each job and each event *should* carry, from
the program's structure alone (which block encloses which). After ``flush()`` it reads the
rows back from PostgreSQL and compares.

A state machine then lets hypothesis pick the exact interleaving of enter, log and leave
across threads, which the scheduler alone would rarely produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
import queue
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, NamedTuple

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql

from llamalogger import Category, JobContext, JobScope, LlamaLogger, bind_job, current_job

# --- the programs --------------------------------------------------------------------------


class Launch(enum.Enum):
    """How a job is started by the code around it."""

    INLINE = "with logger.job(...)"
    DECORATED = "@logger.job function"
    GENERATOR = "@logger.job generator"
    THREAD = "threading.Thread(target=bind_job(fn))"
    EXECUTOR = "ThreadPoolExecutor + bind_job"
    PLAIN_THREAD = "threading.Thread(target=fn), no bind_job"
    TASK = "asyncio task of an @logger.job async def"


class Leave(enum.Enum):
    """How a job's block is left."""

    NORMAL = "normally"
    RAISE = "by an exception"
    CANCEL = "by task cancellation"


REMOTE: Literal["remote"] = "remote"


class Event(NamedTuple):
    call: Literal["log", "created", "linked"]
    category: Category  # for "log" only


@attrs.frozen
class Node:
    """One job of a program."""

    name: str | None
    launch: Launch
    # None: the ambient context decides; an int: parent=JobContext.from_headers() of the
    # ancestor that many levels above the enclosing job; REMOTE: a job of another process
    # that logs nothing here.
    parent: int | Literal["remote"] | None
    custom_id: bool
    leave: Leave
    events: tuple[Event, ...]
    children: tuple[Node, ...]
    events_after: tuple[Event, ...]  # logged after the children: is the context restored?


@attrs.frozen
class Program:
    outside_before: tuple[Event, ...]
    roots: tuple[Node, ...]
    outside_after: tuple[Event, ...]

    def jobs(self) -> int:
        def count(node: Node) -> int:
            return 1 + sum(count(child) for child in node.children)

        return sum(count(root) for root in self.roots)


EVENTS = st.builds(
    Event,
    call=st.sampled_from(["log", "created", "linked"]),
    category=st.sampled_from(Category),
)
NAMES = st.sampled_from([None, "import-album", "link-artist", "enrich-track", "transcode"])


@st.composite
def programs(draw: st.DrawFn, max_jobs: int = 25, max_depth: int = 6) -> Program:
    """A forest of at most ``max_jobs`` jobs, at most ``max_depth`` levels below a root."""
    remaining = draw(st.integers(1, max_jobs))

    def node(depth: int) -> Node:
        nonlocal remaining
        remaining -= 1
        launch = draw(st.sampled_from(Launch))
        parent_kind = draw(st.sampled_from(["ambient"] * 4 + ["ancestor", REMOTE]))
        parent: int | Literal["remote"] | None = None
        if parent_kind == REMOTE:
            parent = REMOTE
        elif parent_kind == "ancestor" and depth > 0:
            parent = draw(st.integers(0, depth - 1))
        leaves = list(Leave) if launch is Launch.TASK else [Leave.NORMAL, Leave.RAISE]
        events = tuple(draw(st.lists(EVENTS, max_size=3)))
        children: list[Node] = []
        if depth < max_depth:
            for _ in range(draw(st.integers(0, min(3, remaining)))):
                if remaining <= 0:
                    break
                children.append(node(depth + 1))
        return Node(
            name=draw(NAMES),
            launch=launch,
            parent=parent,
            custom_id=draw(st.booleans()),
            leave=draw(st.sampled_from(leaves)),
            events=events,
            children=tuple(children),
            events_after=tuple(draw(st.lists(EVENTS, max_size=1))),
        )

    roots: list[Node] = []
    while remaining > 0 and len(roots) < 4:
        roots.append(node(0))
    return Program(
        outside_before=tuple(draw(st.lists(EVENTS, max_size=2))),
        roots=tuple(roots),
        outside_after=tuple(draw(st.lists(EVENTS, max_size=2))),
    )


# --- running a program and recording what the rows must say --------------------------------


class Boom(Exception):
    """Raised inside a job block on purpose and caught outside it."""


@attrs.frozen
class Expected:
    """What every row of one job must carry, worked out from the program's structure."""

    parent: str | None
    root: str
    name: str | None
    rule: str  # which invariant sets parent and root, for the failure message


class Stored(NamedTuple):
    event: int
    job_id: str | None
    parent_job_id: str | None
    root_job_id: str | None
    job_name: str | None


def check_current(expected: JobContext | None, where: str) -> None:
    """Invariants 5 and 6: the current job is exactly the one the structure says."""
    actual = current_job()
    assert actual is expected, f"{where}: current_job() is {actual!r}, expected {expected!r}"


class Ledger:
    """What one run logged and what its rows must say; safe to use from many threads.

    A job's expected parent and root are worked out from the structure of the code that
    entered it (which job encloses which, passed around as arguments), and an event's job
    is the one whose body logged it; the ContextVar under test decides neither.
    """

    def __init__(self, logger: LlamaLogger) -> None:
        self.logger = logger
        self.run_id = uuid.uuid4().hex  # in every event's details: selects this run's rows
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self.jobs: dict[str, Expected] = {}
        self.contexts: dict[str, JobContext] = {}
        self.events: dict[int, str | None] = {}  # event number -> job it was logged in
        self.left_normally: dict[str, bool] = {}  # job -> whether its block ended normally

    def emit(self, event: Event, job: JobContext | None) -> None:
        """Log ``event``, noting that its row belongs to ``job`` (None: outside any job)."""
        with self._lock:
            number = next(self._numbers)
            self.events[number] = None if job is None else job.job_id
        run = self.run_id
        if event.call == "created":
            self.logger.created(("track", number), run=run, ev=number)
        elif event.call == "linked":
            self.logger.linked(("artist", number), ("album", number), run=run, ev=number)
        else:
            # A LINKED event needs its object; every other category takes none.
            related = ("album", number) if event.category is Category.LINKED else None
            self.logger.log(event.category, f"event {number}", related=related, run=run, ev=number)

    def record_job(
        self, job: JobContext, parent: JobContext | None, name: str | None, explicit: bool
    ) -> None:
        """Note what ``job``'s rows must say, given the job it was started under."""
        with self._lock:
            if parent is None:
                expected = Expected(None, job.job_id, name, "1 (root job)")
            else:
                known = self.jobs.get(parent.job_id)  # unknown: a job of another process
                root = parent.job_id if known is None else known.root
                rule = "3 (explicit parent)" if explicit else "2 (nested job)"
                expected = Expected(parent.job_id, root, name, rule)
            self.jobs[job.job_id] = expected
            self.contexts[job.job_id] = job
        got = (job.parent_job_id, job.root_job_id, job.name)
        assert got == (expected.parent, expected.root, expected.name), f"invariant {expected.rule}"


class Run(Ledger):
    """Executes one program with a real logger, recording the expected rows as it goes.

    Job contexts travel down the program as ``stack`` (the enclosing job last).
    """

    def program(self, program: Program) -> None:
        check_current(None, "before the program")
        for event in program.outside_before:
            self.emit(event, None)
        self.children_sync(program.roots, [])
        for event in program.outside_after:
            self.emit(event, None)
        check_current(None, "after the program")

    def scope(self, node: Node, stack: list[JobContext]) -> tuple[JobScope, list[JobContext]]:
        """The scope that starts ``node`` and the stack its parent is the top of."""
        job_id = f"custom 'ü\"\\ {uuid.uuid4().hex}" if node.custom_id else None
        explicit: JobContext | None = None
        if node.parent == REMOTE:
            remote = JobContext(f"remote-{uuid.uuid4().hex}")  # a job of another process
            explicit = JobContext.from_headers(remote.to_headers())
            parents = [explicit]
        elif isinstance(node.parent, int) and stack:
            level = max(0, len(stack) - 1 - node.parent)
            explicit = JobContext.from_headers(stack[level].to_headers())
            parents = [*stack[:level], explicit]
        elif node.launch is Launch.PLAIN_THREAD:
            parents = []  # a plain thread starts with an empty context
        else:
            parents = stack
        return self.logger.job(node.name, job_id=job_id, parent=explicit), parents

    def entered(self, node: Node, job: JobContext, parents: list[JobContext]) -> list[JobContext]:
        """Record what ``job``'s rows must say; return the stack for its body."""
        check_current(job, f"inside {node.launch.value}")
        self.record_job(job, parents[-1] if parents else None, node.name, node.parent is not None)
        self.left_normally[job.job_id] = node.leave is Leave.NORMAL
        return [*parents, job]

    def steps(self, node: Node, job: JobContext, parents: list[JobContext]) -> Iterator[None]:
        """The body of a job in synchronous code; yields after every event."""
        stack = self.entered(node, job, parents)
        for event in node.events:
            self.emit(event, job)
            yield
        self.children_sync(node.children, stack)
        check_current(job, "after the children of a job")
        for event in node.events_after:
            self.emit(event, job)
            yield
        if node.leave is not Leave.NORMAL:
            raise Boom

    def here(
        self,
        node: Node,
        stack: list[JobContext],
        current: JobContext | None,
        form: Launch | None = None,
    ) -> None:
        """Run ``node`` in the calling thread as ``form`` (default: its launch).

        ``current`` must be the current job before and after.
        """
        form = node.launch if form is None else form
        scope, parents = self.scope(node, stack)
        with contextlib.suppress(Boom):  # a block left by an exception, caught outside it
            if form is Launch.DECORATED:

                @scope
                def work() -> None:
                    job = current_job()
                    assert job is not None
                    for _ in self.steps(node, job, parents):
                        pass

                work()
            elif form is Launch.GENERATOR:

                @scope
                def generate() -> Iterator[None]:
                    job = current_job()
                    assert job is not None
                    yield from self.steps(node, job, parents)

                for _ in generate():
                    check_current(current, "between the steps of a job generator")
            else:
                with scope as job:
                    for _ in self.steps(node, job, parents):
                        pass
        check_current(current, f"after a child started by {node.launch.value}")

    def in_thread(self, node: Node, stack: list[JobContext], bound: bool) -> None:
        """A thread's target: the thread sees the enclosing job only if it was bound."""
        current = stack[-1] if bound and stack else None
        check_current(current, "at the start of a thread")
        if not bound:
            self.emit(Event("log", Category.SKIPPED), None)  # outside any job (invariant 6)
        self.here(node, stack, current, Launch.INLINE)

    def start_thread(self, node: Node, stack: list[JobContext]) -> Callable[[], None]:
        """Start ``node`` in a new thread; returns a join that re-raises the thread's error."""
        bound = node.launch is Launch.THREAD
        target: Callable[[], None] = functools.partial(self.in_thread, node, stack, bound)
        if bound:
            target = bind_job(target)
        errors: list[BaseException] = []

        def catching() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=catching)
        thread.start()

        def join() -> None:
            thread.join()
            if errors:
                raise errors[0]

        return join

    def children_sync(self, children: tuple[Node, ...], stack: list[JobContext]) -> None:
        """Start ``children`` from synchronous code; threads and tasks run concurrently."""
        current = stack[-1] if stack else None
        joins: list[Callable[[], None]] = []
        with ThreadPoolExecutor(max_workers=2) as pool:  # two workers: threads get reused
            for child in children:
                if child.launch in (Launch.THREAD, Launch.PLAIN_THREAD):
                    joins.append(self.start_thread(child, stack))
                elif child.launch is Launch.EXECUTOR:
                    work = bind_job(functools.partial(self.in_thread, child, stack, True))
                    joins.append(pool.submit(work).result)
            for child in children:
                if child.launch in (Launch.INLINE, Launch.DECORATED, Launch.GENERATOR):
                    self.here(child, stack, current)
            tasks = tuple(child for child in children if child.launch is Launch.TASK)
            if tasks:
                asyncio.run(self.tasks(tasks, stack))
                check_current(current, "after asyncio.run")
            for join in joins:
                join()
        check_current(current, "after the threads it started were joined")

    # asyncio

    async def body_async(
        self,
        node: Node,
        job: JobContext,
        parents: list[JobContext],
        ready: asyncio.Event | None = None,
    ) -> None:
        """The body of a job in async code; gives other tasks a turn after every event."""
        stack = self.entered(node, job, parents)
        for event in node.events:
            self.emit(event, job)
            await asyncio.sleep(0)
        await self.children_async(node.children, stack)
        check_current(job, "after the children of an async job")
        for event in node.events_after:
            self.emit(event, job)
            await asyncio.sleep(0)
        if node.leave is Leave.RAISE:
            raise Boom
        if node.leave is Leave.CANCEL:
            assert ready is not None
            ready.set()
            await asyncio.get_running_loop().create_future()  # until cancelled

    async def task(self, node: Node, stack: list[JobContext], ready: asyncio.Event) -> None:
        current = stack[-1] if stack else None
        check_current(current, "at the start of a task")
        scope, parents = self.scope(node, stack)

        @scope
        async def work() -> None:
            job = current_job()
            assert job is not None
            await self.body_async(node, job, parents, ready)

        try:
            await work()
        except (Boom, asyncio.CancelledError) as exc:
            check_current(current, f"after a task was left {node.leave.value}")
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            ready.set()
        check_current(current, "after a task")

    async def tasks(self, children: tuple[Node, ...], stack: list[JobContext]) -> None:
        """Run ``children`` as concurrent tasks, cancelling those meant to be cancelled."""
        started = []
        for child in children:
            ready = asyncio.Event()
            started.append((child, asyncio.create_task(self.task(child, stack, ready)), ready))
        for child, task, ready in started:
            if child.leave is Leave.CANCEL:
                await ready.wait()
                task.cancel()
        results = await asyncio.gather(*(task for _, task, _ in started), return_exceptions=True)
        for (child, _, _), result in zip(started, results, strict=True):
            if not (result is None or isinstance(result, asyncio.CancelledError)):
                raise result
            assert (result is not None) == (child.leave is Leave.CANCEL)
        check_current(stack[-1] if stack else None, "after gathering tasks")

    async def children_async(self, children: tuple[Node, ...], stack: list[JobContext]) -> None:
        current = stack[-1] if stack else None
        loop = asyncio.get_running_loop()
        tasks = tuple(child for child in children if child.launch is Launch.TASK)
        gathered = asyncio.create_task(self.tasks(tasks, stack)) if tasks else None
        for child in children:
            if child.launch is Launch.INLINE:
                scope, parents = self.scope(child, stack)
                with contextlib.suppress(Boom):
                    async with scope as job:
                        await self.body_async(child, job, parents)
            elif child.launch is Launch.DECORATED:
                scope, parents = self.scope(child, stack)

                @scope
                async def work(node: Node = child, parents: list[JobContext] = parents) -> None:
                    job = current_job()
                    assert job is not None
                    await self.body_async(node, job, parents)

                with contextlib.suppress(Boom):
                    await work()
            elif child.launch is Launch.GENERATOR:
                # In a thread of its own: its children may call asyncio.run(), which cannot
                # run inside this thread's loop. to_thread() carries the context over.
                await asyncio.to_thread(self.here, child, stack, current)
            elif child.launch in (Launch.THREAD, Launch.PLAIN_THREAD):
                await asyncio.to_thread(self.start_thread(child, stack))
            elif child.launch is Launch.EXECUTOR:
                work_in_thread = functools.partial(self.in_thread, child, stack, True)
                await loop.run_in_executor(None, bind_job(work_in_thread))
            check_current(current, f"after an async child started by {child.launch.value}")
        if gathered is not None:
            await gathered
        check_current(current, "after the async children")


# --- reading back and checking -------------------------------------------------------------


def stored_rows(conn: psycopg.Connection, schema: str, run_id: str) -> list[Stored]:
    query = sql.SQL(
        "SELECT (details->>'ev')::int, job_id, parent_job_id, root_job_id, job_name"
        " FROM {}.llama_log WHERE details->>'run' = %s ORDER BY id"
    ).format(sql.Identifier(schema))
    return [Stored(*row) for row in conn.execute(query, (run_id,)).fetchall()]


def stored_job_records(
    conn: psycopg.Connection, schema: str, job_ids: list[str]
) -> list[tuple[str, str | None, str, str | None, str]]:
    query = sql.SQL(
        "SELECT job_id, parent_job_id, root_job_id, job_name, status FROM {}.llama_job"
        " WHERE job_id = ANY(%s) ORDER BY id"
    ).format(sql.Identifier(schema))
    return conn.execute(query, (job_ids,)).fetchall()


def check_job_records(
    run: Ledger, records: list[tuple[str, str | None, str, str | None, str]]
) -> None:
    """Invariant 10: every job that ended has one record, with the parent and root its
    events carry (checked against the same expectation as the events, invariants 1-3), and
    a status that says whether its block ended normally."""
    found: dict[str, list[tuple[str | None, str, str | None, str]]] = {}
    for job_id, *rest in records:
        found.setdefault(job_id, []).append(tuple(rest))  # type: ignore[arg-type]
    assert set(found) == set(run.jobs), "invariant 10: a job that ended has no record"
    for job_id, (record, *more) in found.items():
        assert not more, f"invariant 10: {job_id} has {1 + len(more)} records"
        expected = run.jobs[job_id]
        parent, root, name, status = record
        assert (parent, root, name) == (expected.parent, expected.root, expected.name), (
            f"invariant 10 ({expected.rule})"
        )
        normal = run.left_normally.get(job_id, True)
        assert (status == "succeeded") is normal, f"invariant 10: {job_id} ended {status}"


def check_rows(run: Ledger, rows: list[Stored]) -> None:
    """Invariants 1-4 and 6-8 on the rows one run wrote."""
    # Nothing lost, nothing written twice.
    assert sorted(row.event for row in rows) == sorted(run.events)

    for row in rows:
        job = run.events[row.event]
        if job is None:
            assert row[1:] == (None, None, None, None), "invariant 4: outside any job"
            continue
        assert row.job_id == job, "invariant 6: the row landed in another thread's/task's job"
        expected = run.jobs[job]
        assert (row.parent_job_id, row.root_job_id) == (expected.parent, expected.root), (
            f"invariant {expected.rule}"
        )
        assert row.job_name == expected.name

    # Invariant 7: one job, one parent and one root.
    per_job: dict[str, set[tuple[str | None, str | None]]] = {}
    for row in rows:
        if row.job_id is not None:
            per_job.setdefault(row.job_id, set()).add((row.parent_job_id, row.root_job_id))
    assert all(len(pairs) == 1 for pairs in per_job.values()), "invariant 7"

    # Invariant 8: walking up parent_job_id ends, without a cycle, at the row's root. A job
    # that logged nothing has no row to read its parent from; the walk steps through the
    # context the logger gave it. A job of another process ends the walk.
    written_parent = {job: next(iter(pairs))[0] for job, pairs in per_job.items()}
    for job, pairs in per_job.items():
        root = next(iter(pairs))[1]
        seen: set[str] = set()
        step = job
        while True:
            assert step not in seen, f"invariant 8: {job} runs into a cycle"
            seen.add(step)
            if step in written_parent:
                parent = written_parent[step]
            elif step in run.contexts:
                parent = run.contexts[step].parent_job_id
            else:
                break
            if parent is None:
                break
            step = parent
        assert step == root, f"invariant 8: walking up from {job} ends at {step}, not {root}"


@pytest.fixture(scope="module", autouse=True)
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every 10 µs rather than 5 ms, so that concurrent jobs interleave."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


# --- the tests -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs())
def test_rows_carry_the_hierarchy_of_the_code_that_logged_them(
    module_logger: LlamaLogger,
    module_conn: psycopg.Connection,
    module_schema: str,
    program: Program,
) -> None:
    """However jobs nest across threads, executors and tasks, every event lands in the job
    that logged it, with that job's parent and root (invariants 1-4, 6-8), nothing is lost,
    leaving any block restores exactly the context before it (invariant 5), and every job
    that ended has one record that agrees with its events (invariant 10)."""
    run = Run(module_logger)
    run.program(program)
    assert module_logger.flush(timeout=30)
    check_rows(run, stored_rows(module_conn, module_schema, run.run_id))
    check_job_records(run, stored_job_records(module_conn, module_schema, list(run.jobs)))
    assert len(run.jobs) == program.jobs()


# --- step by step: hypothesis chooses the interleaving -------------------------------------


class Worker:
    """A thread that runs the steps it is handed one at a time, so that the state machine,
    not the scheduler, decides how enter, log and leave of different threads interleave."""

    def __init__(self, start: JobContext | None, bound: bool) -> None:
        self.start = start  # what this thread's code sees outside the jobs it enters itself
        self.open: list[tuple[JobScope, JobContext]] = []
        self._inbox: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        target = bind_job(self._serve) if bound else self._serve
        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    @property
    def current(self) -> JobContext | None:
        """The job the code in this thread must see now."""
        return self.open[-1][1] if self.open else self.start

    def call(self, fn: Callable[[], Any]) -> Any:
        self._inbox.put(fn)
        ok, value = self._outbox.get(timeout=30)
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=30)

    def _serve(self) -> None:
        while (fn := self._inbox.get()) is not None:
            try:
                self._outbox.put((True, fn()))
            except BaseException as exc:
                self._outbox.put((False, exc))


class InterleavedJobs(RuleBasedStateMachine):
    """Threads enter, log in and leave jobs in whatever order hypothesis picks."""

    workers = Bundle("workers")

    def __init__(self, logger: LlamaLogger, conn: psycopg.Connection, schema: str) -> None:
        super().__init__()
        self.ledger = Ledger(logger)
        self.conn = conn
        self.schema = schema
        self.all_workers: list[Worker] = []

    def _new_worker(self, start: JobContext | None, bound: bool) -> Worker:
        worker = Worker(start, bound)
        self.all_workers.append(worker)
        return worker

    @precondition(lambda self: len(self.all_workers) < 6)
    @rule(target=workers)
    def start_thread_outside_any_job(self) -> Worker:
        return self._new_worker(None, bound=False)

    @precondition(lambda self: len(self.all_workers) < 6)
    @rule(target=workers, spawner=workers, bound=st.booleans())
    def start_thread_from_a_thread(self, spawner: Worker, bound: bool) -> Worker:
        """``bind_job`` carries the spawner's job into the new thread; a plain thread gets none."""
        # Built inside the spawner's thread, so bind_job snapshots the spawner's context.
        worker: Worker = spawner.call(
            lambda: self._new_worker(spawner.current if bound else None, bound=bound)
        )
        return worker

    @rule(worker=workers, name=NAMES, via=st.none() | workers)
    def enter_job(self, worker: Worker, name: str | None, via: Worker | None) -> None:
        """Enter a job, nested in the thread's current job or under another thread's job
        handed over as headers (as another process would receive it)."""
        explicit = None
        if via is not None and via.current is not None:
            explicit = JobContext.from_headers(via.current.to_headers())
        parent = explicit if explicit is not None else worker.current
        scope = self.ledger.logger.job(name, parent=explicit)
        job = worker.call(scope.__enter__)
        self.ledger.record_job(job, parent, name, explicit is not None)
        worker.open.append((scope, job))

    @rule(worker=workers, event=EVENTS)
    def log(self, worker: Worker, event: Event) -> None:
        worker.call(functools.partial(self.ledger.emit, event, worker.current))

    @precondition(lambda self: any(worker.open for worker in self.all_workers))
    @rule(data=st.data(), by_exception=st.booleans())
    def leave_job(self, data: st.DataObject, by_exception: bool) -> None:
        """Invariant 5: leaving restores exactly the context before the job."""
        worker = data.draw(st.sampled_from([w for w in self.all_workers if w.open]))
        scope, job = worker.open.pop()
        self.ledger.left_normally[job.job_id] = not by_exception
        if by_exception:
            worker.call(functools.partial(scope.__exit__, Boom, Boom(), None))
        else:
            worker.call(functools.partial(scope.__exit__, None, None, None))
        assert worker.call(current_job) is worker.current

    @invariant()
    def every_thread_sees_only_its_own_job(self) -> None:
        """Invariant 6: a thread sees the job it entered last, whatever the others did."""
        for worker in self.all_workers:
            assert worker.call(current_job) is worker.current

    def teardown(self) -> None:
        for worker in self.all_workers:
            while worker.open:
                scope, _ = worker.open.pop()
                worker.call(functools.partial(scope.__exit__, None, None, None))
            worker.stop()
        assert self.ledger.logger.flush(timeout=30)
        check_rows(self.ledger, stored_rows(self.conn, self.schema, self.ledger.run_id))
        check_job_records(
            self.ledger, stored_job_records(self.conn, self.schema, list(self.ledger.jobs))
        )


def test_interleaved_threads_keep_their_own_jobs(
    module_logger: LlamaLogger, module_conn: psycopg.Connection, module_schema: str
) -> None:
    """Whatever order threads enter, log in and leave jobs, each row carries the job of the
    thread that logged it (invariants 1-8, 10), and no thread sees another's job (invariant 6)."""

    class OnThisServer(InterleavedJobs):
        def __init__(self) -> None:
            super().__init__(module_logger, module_conn, module_schema)

    run_state_machine_as_test(
        OnThisServer,
        settings=settings(max_examples=60, stateful_step_count=40, deadline=None),
    )
