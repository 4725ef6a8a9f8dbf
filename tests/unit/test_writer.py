"""The writer's queue, thread, flush and close, against an in-memory sink.

The sink stands in for PostgreSQL the way OpenTelemetry tests its batch processor with an
in-memory exporter: it can be told to be unreachable, to refuse rows, to hang or to raise
anything, so every step of the writer can be made to fail. What PostgreSQL itself does is
tested in tests/integration and tests/faults.
"""

from __future__ import annotations

import collections
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg
import psycopg.errors
import pytest

from llamalogger._pipeline import Settings, Spill, Writer, open_writer
from llamalogger._pipeline.delivery import _EncodedRows
from llamalogger._pipeline.intake import _Batch
from llamalogger._pipeline.spill import SpillDir
from llamalogger._records import JOB, Record

TARGET = {"host": "h", "port": "5432", "dbname": "d", "schema": "s"}


class MemorySink:
    """Rows land in ``rows``; ``down``, ``refuse``, ``hang`` and ``explode`` inject failures."""

    def __init__(self) -> None:
        self.rows: list[tuple[object, ...]] = []
        self.replays: set[str] = set()
        self.down = False
        self.refuse: Callable[[tuple[object, ...]], bool] = lambda row: False
        self.hang = threading.Event()  # set: writes block until cancel()
        self.cancelled = threading.Event()
        self.explode: BaseException | None = None
        self.delay = 0.0
        self.writes = 0
        self.on_write: Callable[[], None] | None = None
        self.written = threading.Event()  # set after each write that stored its rows
        self.hanging = threading.Event()  # set once a write is held by ``hang``
        self.handed = 0  # rows the sink took in, the way BatchSink counts its progress
        self.pace = 0.0  # seconds per row: a slow server, whose progress shows row by row
        self.stall_at: int | None = None  # after this many rows handed, the write hangs

    def _check(self, rows: Sequence[tuple[object, ...]]) -> None:
        self.writes += 1
        if self.on_write is not None:
            self.on_write()
        if self.explode is not None:
            raise self.explode
        if self.down:
            raise psycopg.OperationalError("connection refused")
        if self.pace:
            for _ in rows:
                if self.stall_at is not None and self.handed >= self.stall_at:
                    self.hang.set()
                    break
                if self.cancelled.is_set():
                    self.cancelled.clear()
                    raise psycopg.errors.QueryCanceled("canceling statement due to user request")
                time.sleep(self.pace)
                self.handed += 1
        if self.hang.is_set():
            self.cancelled.clear()
            self.hanging.set()
            self.cancelled.wait(30)
            raise psycopg.errors.QueryCanceled("canceling statement due to user request")
        if any(self.refuse(row) for row in rows):
            raise psycopg.errors.CheckViolation("new row violates check constraint")
        if self.delay:
            time.sleep(self.delay)

    def write(self, rows: Sequence[tuple[object, ...]]) -> None:
        self._check(rows)
        self.handed += 0 if self.pace else len(rows)
        self.rows.extend(rows)
        self.written.set()

    def write_replays(self, files: Sequence[tuple[str, Sequence[tuple[object, ...]]]]) -> set[str]:
        # All or nothing, as one transaction: every row is taken before any is kept.
        rows = [row for _, file_rows in files for row in file_rows]
        self._check(rows)
        stored_before = {spill_id for spill_id, _ in files if spill_id in self.replays}
        self.replays.update(spill_id for spill_id, _ in files)
        self.rows.extend(
            row
            for spill_id, file_rows in files
            if spill_id not in stored_before
            for row in file_rows
        )
        self.written.set()
        return stored_before

    def cancel(self, timeout: float = 2.0) -> None:
        self.cancelled.set()

    def progress(self) -> int:
        return self.handed

    def target(self) -> dict[str, str]:
        return dict(TARGET)

    def after_fork_in_child(self) -> None:
        pass

    def close(self) -> None:
        pass


def record(number: int, message: str | None = None) -> Record:
    return (
        0, "CREATED", "info", message or f"event {number}", None, None, None, None,
        "track", str(number), None, None, None,
    )  # fmt: skip


def numbers(rows: Sequence[tuple[object, ...]]) -> list[int]:
    return [int(str(row[9])) for row in rows]


def put(writer: Writer, record: Record) -> None:
    """Queue a whole record the way the logger does: its fields and its details apart."""
    writer.put_apart(record[:12], record[12])


@pytest.fixture
def make_writer(tmp_path: Path) -> Iterator[Callable[..., tuple[Writer, MemorySink]]]:
    made: list[Writer] = []

    def make(
        *, spill: bool = True, sink: MemorySink | None = None, **options: object
    ) -> tuple[Writer, MemorySink]:
        sink = sink or MemorySink()
        spill_dir = tmp_path / "spill" if spill else Spill.OFF
        settings = Settings(**{"flush_interval": 0.01, "spill_dir": spill_dir, **options})  # type: ignore[arg-type]
        writer = open_writer(sink, settings)
        made.append(writer)
        return writer, sink

    yield make
    for writer in made:
        writer.close(timeout=1)


def assert_adds_up(stats: dict[str, int]) -> None:
    """The accounting identity of docs/design.md §5."""
    parts = ("written", "rejected", "dropped", "on_disk", "queued")
    assert stats["enqueued"] == sum(stats[part] for part in parts), stats


class TestBatches:
    def test_a_full_batch_wakes_the_writer_before_the_interval(self, make_writer) -> None:
        """Events wait for flush_interval, unless a whole batch is queued: then at once."""
        writer, sink = make_writer(batch_size=10, flush_interval=3600)
        for n in range(9):
            put(writer, record(n))
        put(writer, record(9))
        assert sink.written.wait(5)  # the first write: nothing woke the writer before
        # One short of a batch, the nine waited for the interval: all ten came as one.
        assert (sink.writes, numbers(sink.rows)) == (1, list(range(10)))

    def test_a_batch_of_one_is_written_at_once(self, make_writer) -> None:
        writer, sink = make_writer(batch_size=1, flush_interval=3600)
        put(writer, record(1))
        assert sink.written.wait(5)
        assert numbers(sink.rows) == [1]


class TestBackpressure:
    def test_a_flood_into_a_small_queue_is_slowed_down_not_dropped(self, make_writer) -> None:
        """While the writer makes progress, a full queue makes the caller wait for room."""
        writer, sink = make_writer(queue_size=100, batch_size=50)
        sink.delay = 0.001
        for number in range(5000):
            put(writer, record(number))
        assert writer.flush(timeout=10)
        assert numbers(sink.rows) == list(range(5000))
        stats = writer.stats()
        assert stats["dropped"] == 0
        assert_adds_up(stats)

    def test_a_put_from_the_writers_own_thread_never_waits(self, make_writer) -> None:
        """psycopg logging through a handler of ours runs on the writer thread: it must not
        wait for room that only that thread can make."""
        writer, sink = make_writer(queue_size=5, batch_size=5, block_timeout=5)
        sink.on_write = lambda: [put(writer, record(900 + n)) for n in range(10)] and None
        started = time.monotonic()
        for number in range(5):
            put(writer, record(number))
        assert writer.flush(timeout=2)
        sink.on_write = None
        assert writer.flush(timeout=2)
        assert time.monotonic() - started < 2
        assert writer.stats()["dropped"] == 0

    def test_drop_policy_drops_counts_and_warns_once(self, make_writer, caplog) -> None:
        writer, sink = make_writer(queue_size=10, on_full="drop", spill=False)
        sink.hang.set()
        with caplog.at_level(logging.WARNING, logger="llamalogger"):
            for number in range(100):
                put(writer, record(number))
        assert writer.stats()["dropped"] >= 80
        assert sum("dropped an event" in r.getMessage() for r in caplog.records) == 1
        sink.cancel()
        sink.hang.clear()


class TestOutage:
    def test_unreachable_database_puts_events_on_disk_and_replays_them_in_order(
        self, make_writer
    ) -> None:
        writer, sink = make_writer(batch_size=100)
        sink.down = True
        for number in range(1000):
            put(writer, record(number))
        assert writer.flush(timeout=5)  # on disk counts as delivered
        stats = writer.stats()
        assert (stats["on_disk"], stats["written"], stats["dropped"]) == (1000, 0, 0)
        assert_adds_up(stats)
        sink.down = False
        for number in range(1000, 1100):
            put(writer, record(number))
        assert writer.close(timeout=5)
        assert numbers(sink.rows) == list(range(1100))
        stats = writer.stats()
        assert (stats["on_disk"], stats["written"]) == (0, 1100)
        # Events logged while older ones wait on disk go to disk too: order is kept.
        assert stats["replayed"] >= 1000
        assert_adds_up(stats)

    def test_without_spilling_close_gives_up_in_time_and_counts_each_loss_once(
        self, make_writer, caplog
    ) -> None:
        writer, sink = make_writer(spill=False, batch_size=10)
        sink.down = True
        for number in range(100):
            put(writer, record(number))
        assert not writer.flush(timeout=0.3)
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="llamalogger"):
            assert not writer.close(timeout=0.5)
        assert time.monotonic() - started < 2
        stats = writer.stats()
        assert (stats["dropped"], stats["written"], stats["queued"]) == (100, 0, 0)
        assert_adds_up(stats)
        assert sum("not written" in r.getMessage() for r in caplog.records) == 1
        assert not writer.close()  # twice: same answer, nothing counted again
        assert writer.stats() == stats

    def test_a_hanging_write_holds_callers_at_most_block_timeout_then_goes_to_disk(
        self, make_writer
    ) -> None:
        writer, sink = make_writer(queue_size=50, batch_size=50, block_timeout=0.4)
        sink.hang.set()
        slowest = 0.0
        for number in range(500):
            started = time.monotonic()
            put(writer, record(number))
            slowest = max(slowest, time.monotonic() - started)
            if number == 100:
                sink.hang.clear()  # the cancelled write's batch went to disk; no more hangs
                sink.down = True
        assert writer.flush(timeout=5)
        assert slowest <= 0.4 + 0.2
        assert sink.cancelled.is_set()
        stats = writer.stats()
        assert stats["dropped"] == 0
        assert stats["on_disk"] == 500
        assert_adds_up(stats)

    def test_a_slow_write_that_moves_is_never_cancelled_and_nothing_is_dropped(
        self, make_writer
    ) -> None:
        """Each write takes three times block_timeout, but rows move all the while: callers
        wait at its pace, no write is cancelled, nothing goes to disk or is dropped."""
        writer, sink = make_writer(queue_size=20, batch_size=20, block_timeout=0.2)
        sink.pace = 0.03  # 20 rows: 0.6 s a write
        for number in range(100):
            put(writer, record(number))
        assert writer.flush(timeout=10)
        assert not sink.cancelled.is_set()
        stats = writer.stats()
        assert (stats["dropped"], stats["spilled"], stats["retried"]) == (0, 0, 0)
        assert numbers(sink.rows) == list(range(100))
        assert_adds_up(stats)

    def test_a_write_that_stops_moving_is_cancelled_once_still_for_half_block_timeout(
        self, make_writer
    ) -> None:
        """A write that moved, then hangs, is cancelled half of block_timeout after its
        last progress (not after the caller began to wait); its batch goes to disk and no
        caller drops anything."""
        writer, sink = make_writer(queue_size=20, batch_size=20, block_timeout=0.4)
        sink.pace = 0.02
        sink.stall_at = 30  # the second write hangs after 10 of its rows
        for number in range(100):
            put(writer, record(number))
            if sink.cancelled.is_set():
                sink.pace, sink.stall_at = 0.0, None
        assert writer.flush(timeout=10)
        assert sink.cancelled.is_set()
        stats = writer.stats()
        assert stats["dropped"] == 0
        assert stats["spilled"] >= 20  # the cancelled batch, and those behind it
        assert_adds_up(stats)

    def test_without_any_progress_callers_drop_after_block_timeout(self, make_writer) -> None:
        """No spill directory and a write that never moves: the first caller waits
        block_timeout, then drops; later ones drop at once until the writer moves."""
        writer, sink = make_writer(spill=False, queue_size=10, batch_size=10, block_timeout=0.3)
        sink.hang.set()
        started = time.monotonic()
        for number in range(30):
            put(writer, record(number))
        waited = time.monotonic() - started
        assert 0.3 <= waited < 0.3 + 1.0
        assert writer.stats()["dropped"] == 10
        sink.hang.clear()
        sink.cancel()

    def test_close_cancels_a_slow_write_in_time_and_says_what_waits_on_disk(
        self, make_writer, caplog
    ) -> None:
        """A slow server at close(): what it has not taken when the time is nearly up goes
        to disk; close() ends within its timeout and says how many events wait there."""
        writer, sink = make_writer(queue_size=1000, batch_size=100)
        sink.pace = 0.01  # 1 s a batch
        for number in range(1000):
            put(writer, record(number))
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="llamalogger"):
            closed = writer.close(timeout=2.0)
        elapsed = time.monotonic() - started
        stats = writer.stats()
        assert elapsed < 2.0
        assert closed  # nothing lost: what was not written waits on disk
        assert stats["dropped"] == 0
        assert stats["on_disk"] > 0
        assert stats["written"] + stats["on_disk"] == 1000
        assert_adds_up(stats)
        assert any(
            f"closed with {stats['on_disk']} events in spill files" in r.getMessage()
            for r in caplog.records
        )

    def test_a_write_close_cancels_is_no_outage_and_its_batch_goes_to_disk(
        self, make_writer, caplog
    ) -> None:
        """A write still going when close() must end is cancelled by close() itself: its
        batch goes to disk, and no warning says the database cannot be written."""
        writer, sink = make_writer(queue_size=1000, batch_size=1000)
        sink.pace = 0.005  # 5 s for the batch: still going when close() cancels it
        for number in range(1000):
            put(writer, record(number))
        deadline = time.monotonic() + 5
        while sink.handed == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with caplog.at_level(logging.WARNING, logger="llamalogger"):
            assert writer.close(timeout=1.0)
        stats = writer.stats()
        assert (stats["dropped"], stats["on_disk"], stats["written"]) == (0, 1000, 0), stats
        messages = [r.getMessage() for r in caplog.records]
        assert not any("cannot write to the database" in m for m in messages), messages

    def test_close_with_a_write_that_never_returns_reports_it_and_does_not_count_twice(
        self, make_writer
    ) -> None:
        threads_before = set(threading.enumerate())
        writer, sink = make_writer(spill=False)
        (thread,) = {  # the writer's own
            t for t in set(threading.enumerate()) - threads_before if t.name == "llamalogger-writer"
        }
        sink.hang.set()
        sink.cancel = lambda timeout=2.0: None  # type: ignore[method-assign]  # a stalled network
        for number in range(10):
            put(writer, record(number))
        assert sink.hanging.wait(5)  # the writer is in its write and will not come back
        started = time.monotonic()
        assert not writer.close(timeout=0.2)
        assert time.monotonic() - started < 2.5
        stats = writer.stats()
        assert stats["dropped"] == 10
        assert_adds_up(stats)
        sink.cancelled.set()  # the write returns at last: nothing may be counted again
        thread.join(5)
        assert not thread.is_alive()
        assert writer.stats() == stats


class TestNeverDies:
    @pytest.mark.parametrize(
        "failure", [RuntimeError("bug"), SystemExit(3), KeyboardInterrupt(), GeneratorExit()]
    )
    def test_the_writer_thread_survives_anything_and_goes_on(
        self, make_writer, caplog, failure: BaseException
    ) -> None:
        writer, sink = make_writer(spill=False)
        sink.explode = failure
        with caplog.at_level(logging.ERROR, logger="llamalogger"):
            put(writer, record(1))
            assert writer.flush(timeout=5)
        sink.explode = None
        put(writer, record(2))
        assert writer.flush(timeout=5)
        assert numbers(sink.rows)[-1] == 2
        stats = writer.stats()
        assert_adds_up(stats)
        assert stats["written"] >= 1

    def test_refused_rows_are_isolated_and_reported_once_per_reason(
        self, make_writer, caplog, tmp_path: Path
    ) -> None:
        writer, sink = make_writer(dead_letter_path=tmp_path / "dead.jsonl")
        sink.refuse = lambda row: int(str(row[9])) % 10 == 0
        with caplog.at_level(logging.ERROR, logger="llamalogger"):
            for number in range(200):
                put(writer, record(number))
            assert writer.flush(timeout=10)
        assert numbers(sink.rows) == [n for n in range(200) if n % 10]
        stats = writer.stats()
        assert stats["rejected"] == 20
        assert_adds_up(stats)
        assert len((tmp_path / "dead.jsonl").read_text().splitlines()) == 20
        assert sum("rejected an event" in r.getMessage() for r in caplog.records) == 1


def test_the_counters_add_up_at_every_moment_under_load(make_writer) -> None:
    """enqueued == written + rejected + dropped + on_disk + queued, read at random moments
    while events flow, the database comes and goes and rows are refused."""
    writer, sink = make_writer(queue_size=200, batch_size=64)
    sink.refuse = lambda row: int(str(row[9])) % 97 == 0
    stop = threading.Event()

    def produce() -> None:
        number = 0
        while not stop.is_set():
            put(writer, record(number))
            number += 1

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for step in range(200):
            sink.down = step % 50 > 40
            assert_adds_up(writer.stats())
            time.sleep(0.002)
    finally:
        stop.set()
        producer.join()
    sink.down = False
    assert writer.close(timeout=10)
    stats = writer.stats()
    assert_adds_up(stats)
    assert stats["queued"] == stats["on_disk"] == stats["dropped"] == 0


STEPS = {
    "encoding a record": ("llamalogger._pipeline.sanitise.fast_row", RuntimeError("encoder bug")),
    "cleaning a record": ("llamalogger._pipeline.sanitise.clean_row", SystemExit(1)),
    "writing a spill file": (
        "llamalogger._pipeline.spill.SpillDir.write",
        OSError(28, "No space left"),
    ),
    "reading a spill file": ("llamalogger._pipeline.spill.SpillDir.read", ValueError("torn file")),
    "listing the spill directory": (
        "llamalogger._pipeline.spill.SpillDir.pending",
        OSError("gone"),
    ),
    "describing a dead letter": ("llamalogger._pipeline.sanitise.describe", KeyboardInterrupt()),
}


@pytest.mark.parametrize("step", sorted(STEPS))
def test_a_failure_at_any_step_is_survived_and_accounted(
    make_writer, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Whatever step fails — once, with any exception — the writer goes on, flush() answers
    and every event is accounted for in the counters."""
    target, error = STEPS[step]
    real = _resolve(target)
    failed = threading.Event()

    def fail_once(*args: object, **kwargs: object) -> object:
        if not failed.is_set():
            failed.set()
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(target, fail_once)
    writer, sink = make_writer(batch_size=10)
    sink.refuse = lambda row: str(row[9]) == "5"  # so that cleaning and dead letters run
    sink.down = True  # so that the spill directory is used
    for number in range(30):
        put(writer, record(number, message="x" * 100_001 if number == 3 else None))
    assert writer.flush(timeout=10)
    sink.down = False
    for number in range(30, 40):
        put(writer, record(number))
    writer.close(timeout=5)
    stats = writer.stats()
    assert_adds_up(stats)
    assert stats["queued"] == 0
    assert 39 in numbers(sink.rows)  # the writer went on after the failure


def _resolve(target: str) -> Callable[..., object]:
    module_name, _, attribute = target.rpartition(".")
    import importlib

    try:
        owner: object = importlib.import_module(module_name)
    except ModuleNotFoundError:
        module_name, _, class_name = module_name.rpartition(".")
        owner = getattr(importlib.import_module(module_name), class_name)
    return getattr(owner, attribute)  # type: ignore[no-any-return]


def test_a_long_backlog_is_replayed_in_slices_so_the_queue_never_fills(
    make_writer, tmp_path: Path
) -> None:
    """100 spill files whose replay takes over a second, while new events keep coming into
    a small queue: nothing is dropped, and everything arrives in order."""
    backlog = SpillDir(tmp_path / "spill", TARGET, 1 << 30)
    for file_number in range(100):
        backlog.write([record(file_number * 10 + n) for n in range(10)], file_number + 1)
    writer, sink = make_writer(queue_size=200, batch_size=50, block_timeout=0.3)
    sink.delay = 0.015  # each write: 100 replays take 1.5 s
    for number in range(1000, 3000):
        put(writer, record(number))
        if number % 20 == 0:
            time.sleep(0.01)  # about 2,000 events a second
    assert writer.close(timeout=30)
    stats = writer.stats()
    assert stats["dropped"] == 0
    assert numbers(sink.rows) == list(range(3000))


def test_events_that_go_straight_to_disk_are_cleaned_and_counted_once(make_writer) -> None:
    """While spilling, batches skip the COPY encoding; what cleaning changes (a NUL here)
    is still counted in ``sanitised``, once, and stored cleaned after the replay."""
    writer, sink = make_writer(batch_size=10)
    sink.down = True
    put(writer, record(0))
    assert writer.flush(timeout=5)  # the outage has begun: spilling from now on
    assert writer.stats()["on_disk"] == 1
    put(writer, record(1, message="bad \x00 byte"))
    assert writer.flush(timeout=5)
    assert writer.stats()["sanitised"] == 1
    sink.down = False
    assert writer.close(timeout=5)
    assert numbers(sink.rows) == [0, 1]
    assert sink.rows[1][3] == "bad \ufffd byte"
    assert writer.stats()["sanitised"] == 1


class BreaksMidStream(MemorySink):
    """Takes ``after`` rows of the first write, then loses the connection."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.taken_before_failing: list[tuple[object, ...]] = []

    def write(self, rows: Sequence[tuple[object, ...]]) -> None:
        if self.after >= 0:
            for row in rows:
                if len(self.taken_before_failing) == self.after:
                    self.after = -1
                    raise psycopg.OperationalError("server closed the connection unexpectedly")
                self.taken_before_failing.append(row)
        super().write(rows)


def with_details(number: int, **details: object) -> Record:
    return (*record(number)[:12], details)


def test_rows_are_encoded_as_the_sink_takes_them_and_a_retry_resends_them(make_writer) -> None:
    """A write that breaks half way is retried with every row, each encoded once: a NaN
    detail (the careful path, a change) is counted once in ``sanitised``."""
    breaking = BreaksMidStream(after=4)
    writer, _sink = make_writer(sink=breaking, batch_size=10, flush_interval=3600)
    for n in range(10):
        put(writer, with_details(n, score=float("nan")) if n == 7 else with_details(n, k=n))
    assert writer.flush(timeout=5)
    assert numbers(breaking.taken_before_failing) == [0, 1, 2, 3]
    assert numbers(breaking.rows) == list(range(10))  # all of them, once
    assert breaking.rows[1][12] == b'\x01{"k":1}'
    stats = writer.stats()
    assert (stats["written"], stats["retried"], stats["sanitised"]) == (10, 1, 1)
    assert_adds_up(stats)


def test_a_batch_that_goes_to_disk_unread_is_still_counted_as_sanitised(make_writer) -> None:
    """The server is down before any row is taken: the batch goes to disk from the
    records, and the NaN detail is still counted once."""
    writer, sink = make_writer(batch_size=10, flush_interval=3600)
    sink.down = True
    for n in range(10):
        put(writer, with_details(n, score=float("nan")) if n == 3 else with_details(n, k=n))
    assert writer.flush(timeout=5)
    assert writer.stats()["on_disk"] == 10
    assert writer.stats()["sanitised"] == 1
    sink.down = False
    assert writer.close(timeout=5)
    assert numbers(sink.rows) == list(range(10))
    assert writer.stats()["sanitised"] == 1


def test_queued_events_are_out_of_the_garbage_collectors_sight(make_writer) -> None:
    """An event waits in the queue as its plain fields and its details dict, apart: after
    one collection the collector watches neither, so queued events never pile up in its
    oldest generation (benchmarks/README.md measures what that cost the logging calls)."""
    writer, _sink = make_writer(batch_size=10_000, flush_interval=3600)
    gc.collect()
    watched_before = len(gc.get_objects())
    for n in range(1000):
        fields = record(n)[:12]
        writer.put_apart(fields, {"source": "musicbrainz", "score": n / 100, "seen": True})
    del fields
    gc.collect()
    assert writer.stats()["queue_depth"] == 1000
    # Nothing of the 1,000 queued events is watched (a few objects of the run may be).
    assert len(gc.get_objects()) - watched_before < 100
    # A whole record holding its dict, as the queue held them before, stays watched.
    whole = (*record(1)[:12], {"source": "musicbrainz"})
    gc.collect()
    assert gc.is_tracked(whole)


def test_events_queued_apart_are_written_whole_and_in_order(make_writer) -> None:
    writer, sink = make_writer(batch_size=7)
    for n in range(20):
        writer.put_apart(record(n)[:12], {"n": n} if n % 3 else None)
    put(writer, with_details(20, n=20))
    assert writer.flush(timeout=5)
    assert numbers(sink.rows) == list(range(21))
    assert sink.rows[1][12] == b'\x01{"n":1}'
    assert sink.rows[3][12] is None
    stats = writer.stats()
    assert (stats["written"], stats["queued"], stats["queue_depth"]) == (21, 0, 0)
    assert_adds_up(stats)


def test_a_batch_puts_records_together_only_when_read() -> None:
    queue: collections.deque[object] = collections.deque()
    for n in range(5):
        queue.extend((record(n)[:12], {"n": n}))
    batch = _Batch(queue, 3)
    assert len(batch) == 3
    assert len(queue) == 4  # two events left, as pairs
    assert batch[1] == (*record(1)[:12], {"n": 1})
    assert [numbers([r])[0] for r in batch[1:]] == [1, 2]
    assert [r[12] for r in batch] == [{"n": 0}, {"n": 1}, {"n": 2}]


# --- job records ------------------------------------------------------------------------------


def job_fields(number: int, status: str = "succeeded") -> tuple[object, ...]:
    """A job record's first fifteen fields (``_records.JobRecord``), as the facade queues them."""
    return (5, JOB, status, None, f"job-{number}", None, f"job-{number}", "enrich", "track",
            str(number), None, 4, 1, 4242, "worker-1")  # fmt: skip


def test_a_batch_counts_its_job_records_and_the_sink_is_told_without_encoding() -> None:
    """The sink learns whether a batch needs a transaction from the batch's own count,
    before any row is encoded: encoding still overlaps the COPY."""
    queue: collections.deque[object] = collections.deque()
    for n in range(6):
        queue.extend((record(n)[:12], {"n": n}))
    queue.extend((job_fields(1), {"queue": "q"}))
    events_only = _Batch(queue, 6)
    with_job = _Batch(queue, 1)
    assert (events_only.jobs, with_job.jobs) == (0, 1)
    for batch, holds in ((events_only, False), (with_job, True)):
        rows = _EncodedRows(batch)
        assert rows.holds_jobs() is holds
        assert rows._rows == []  # nothing encoded yet
    assert _EncodedRows([record(1), (*job_fields(2), None)]).holds_jobs()  # type: ignore[list-item]


def test_job_records_travel_with_events_and_are_counted(make_writer) -> None:
    writer, sink = make_writer(batch_size=5)
    for n in range(10):
        put(writer, record(n))
        if n % 5 == 4:
            writer.put_apart(job_fields(n), {"n": n})
    assert writer.flush(timeout=5)
    jobs = [row for row in sink.rows if row[1] == JOB]
    assert [(len(row), row[4], row[15]) for row in jobs] == [
        (16, "job-4", b'\x01{"n":4}'),
        (16, "job-9", b'\x01{"n":9}'),
    ]
    stats = writer.stats()
    assert (stats["enqueued"], stats["written"], stats["jobs"]) == (12, 12, 2)
    assert_adds_up(stats)


def test_job_records_dropped_at_the_call_are_counted_as_jobs(make_writer) -> None:
    writer, sink = make_writer(queue_size=2, batch_size=2, on_full="drop", spill=False)
    sink.hang.set()
    for n in range(20):
        writer.put_apart(job_fields(n), None)
    stats = writer.stats()
    assert stats["dropped"] >= 10
    assert stats["jobs"] == stats["enqueued"] - stats["queue_depth"]
    assert_adds_up(stats)
    sink.cancel()
    sink.hang.clear()
