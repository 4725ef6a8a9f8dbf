"""The backlog on its own, stepped the way the writer steps it: ``keep`` puts batches on
disk, ``step()`` replays what is due and says when the next step is."""

from __future__ import annotations

import errno
import logging
import math
import time
from pathlib import Path

import pytest

from llamalogger._pipeline.backlog import Backlog
from llamalogger._pipeline.diagnostics import Reporter
from llamalogger._pipeline.ledger import Outcome
from llamalogger._pipeline.retry import FIRST_RETRY_DELAY, Deadline, Outage
from llamalogger._pipeline.spill import SpillDir

from .test_writer import TARGET, MemorySink, numbers, record


def make_backlog(tmp_path: Path, sink: MemorySink, deadline: Deadline | None = None) -> Backlog:
    spill = SpillDir(tmp_path / "spill", TARGET, 1 << 20)
    return Backlog(sink, spill, Reporter(), Outage("on disk"), deadline or Deadline())


def wait_until(moment: float) -> None:
    """The backlog's own schedule (its backoff), not a thread: there is nothing to wait on."""
    time.sleep(max(0.0, moment - time.monotonic()))


def test_with_nothing_on_disk_a_step_does_nothing_and_asks_for_no_next_one(
    tmp_path: Path,
) -> None:
    sink = MemorySink()
    backlog = make_backlog(tmp_path, sink)
    outcome, due_at = backlog.step()
    assert outcome == Outcome()
    assert math.isinf(due_at)
    assert (backlog.spilling, sink.writes) == (False, 0)


def test_kept_batches_are_replayed_in_order_once_due_and_the_database_is_back(
    tmp_path: Path,
) -> None:
    sink = MemorySink()
    backlog = make_backlog(tmp_path, sink)
    kept = Outcome()
    backlog.keep([record(n) for n in range(3)], 1, kept)
    backlog.keep([record(n) for n in range(3, 5)], 2, kept)
    assert (kept.on_disk, kept.spilled) == (5, 5)
    assert backlog.spilling

    sink.down = True
    outcome, due_at = backlog.step()  # before the backoff, or due with the database away
    assert (outcome.written, sink.rows) == (0, [])
    assert due_at > time.monotonic()

    wait_until(due_at)
    before = time.monotonic()
    outcome, next_due = backlog.step()  # due, but the database is still away
    assert (outcome.retried, outcome.written, sink.rows) == (1, 0, [])
    assert next_due - before >= 2 * FIRST_RETRY_DELAY  # the backoff doubled

    sink.down = False
    wait_until(next_due)
    outcome, due_at = backlog.step()
    assert numbers(sink.rows) == [0, 1, 2, 3, 4]
    assert (outcome.on_disk, outcome.written, outcome.replayed) == (-5, 5, 5)
    assert not backlog.spilling
    assert math.isinf(due_at)


def test_files_left_by_another_writer_are_due_at_once_and_not_counted_as_ours(
    tmp_path: Path,
) -> None:
    SpillDir(tmp_path / "spill", TARGET, 1 << 20).write([record(7), record(8)], 1)
    sink = MemorySink()
    backlog = make_backlog(tmp_path, sink)
    assert backlog.spilling  # this writer's events go behind them
    outcome, due_at = backlog.step()
    assert numbers(sink.rows) == [7, 8]
    assert (outcome.replayed, outcome.written, outcome.on_disk) == (2, 0, 0)
    assert math.isinf(due_at)


def test_the_final_step_replays_what_is_on_disk_without_waiting_for_the_backoff(
    tmp_path: Path,
) -> None:
    sink = MemorySink()
    deadline = Deadline()
    backlog = make_backlog(tmp_path, sink, deadline)
    backlog.keep([record(1)], 1, Outcome())
    deadline.set(time.monotonic() + 5)  # close() began
    outcome, due_at = backlog.step(final=True)
    assert numbers(sink.rows) == [1]
    assert (outcome.written, outcome.on_disk) == (1, -1)
    assert math.isinf(due_at)


def test_without_a_spill_directory_kept_events_are_dropped_and_counted(
    tmp_path: Path,
) -> None:
    sink = MemorySink()
    backlog = Backlog(sink, None, Reporter(), Outage("in memory"), Deadline())
    assert not backlog.enabled
    outcome = Outcome()
    backlog.keep([record(1), record(2)], 1, outcome)
    assert (outcome.dropped, outcome.on_disk) == (2, 0)
    assert backlog.step() == (Outcome(), math.inf)


def test_a_disk_that_refuses_claims_and_removals_is_trouble_reported_not_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """EROFS when claiming a file, EIO when removing a replayed one: each is reported as the
    disk's trouble (no exception reaches the writer). A file that cannot be claimed is
    replayed where it is (the replay mark keeps it exactly once), so that the database gets
    its events although the disk is read-only; a file that cannot be removed stays, and a
    later replay of it writes nothing twice and removes it once the disk lets it."""
    sink = MemorySink()
    backlog = make_backlog(tmp_path, sink)
    kept = Outcome()
    backlog.keep([record(n) for n in range(3)], 1, kept)
    backlog.keep([record(n) for n in range(3, 5)], 2, kept)

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as patch, caplog.at_level(logging.ERROR, logger="llamalogger"):
        patch.setattr(Path, "rename", read_only)  # claiming a file
        patch.setattr(Path, "unlink", read_only)  # removing it
        outcome, _ = backlog.step(final=True)
        assert "cannot claim spill file" in caplog.text
        assert "cannot remove spill file" in caplog.text
        assert "Read-only" in caplog.text
    assert numbers(sink.rows) == list(range(5))
    assert (outcome.written, outcome.on_disk) == (5, -5)  # counted once, as the files stored
    assert not backlog.spilling  # what waits in memory goes straight to the database
    assert len(list((tmp_path / "spill").glob("*.jsonl"))) == 2  # still on the disk
    writes = sink.writes

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "unlink", failing)
        outcome, _ = backlog.step(final=True)
    assert outcome == Outcome()
    assert sink.writes == writes  # stored already: only their removal is tried, not a replay
    assert len(list((tmp_path / "spill").glob("*.jsonl"))) == 2
    backlog.step(final=True)  # the disk behaves: the files go
    assert (sink.writes, numbers(sink.rows)) == (writes, list(range(5)))
    assert list((tmp_path / "spill").iterdir()) == []
    assert not backlog.spilling


def test_a_batch_the_disk_refuses_is_held_and_the_disk_tried_again_after_the_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC writing a spill file: nothing is counted (the records are handed back to the
    writer's queue, not settled), no batch is taken until the next attempt is due, and then
    the disk is tried again."""
    sink = MemorySink()
    backlog = make_backlog(tmp_path, sink)
    batch = [record(n) for n in range(3)]

    def full(self: SpillDir, rows: object, taken_ns: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(SpillDir, "write", full)
        outcome = Outcome()
        backlog.keep(batch, 1, outcome, first_pass=True)
        assert outcome == Outcome()
        assert backlog.holding
        assert backlog.take_held() == batch
        assert not backlog.holding
        assert not backlog.takes_batch(100, 10, asked=True)  # nowhere to put it yet
        _, due_at = backlog.step()
        assert time.monotonic() < due_at <= time.monotonic() + FIRST_RETRY_DELAY
        backlog.keep(batch, 2, outcome)  # before the backoff: held without trying the disk
        assert backlog.take_held() == batch
    wait_until(due_at)
    assert backlog.takes_batch(100, 10, asked=False)
    backlog.keep(batch, 3, outcome)
    assert (outcome.on_disk, outcome.spilled, outcome.dropped) == (3, 3, 0)
    assert not backlog.holding


def test_a_disk_still_refusing_when_closing_has_no_time_left_drops_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sink = MemorySink()
    deadline = Deadline()
    backlog = make_backlog(tmp_path, sink, deadline)

    def read_only(self: SpillDir, rows: object, taken_ns: int) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(SpillDir, "write", read_only)
    backlog.keep([record(1)], 1, Outcome())
    assert backlog.take_held() == [record(1)]
    deadline.set(time.monotonic())  # close() has no time left: one more attempt, then dropped
    outcome = Outcome()
    with caplog.at_level(logging.ERROR, logger="llamalogger"):
        backlog.keep([record(1), record(2)], 2, outcome)
    assert (outcome.dropped, backlog.holding) == (2, False)
    assert "while closing (" in caplog.text


def test_while_spilling_events_gather_until_a_batch_is_full_time_passed_or_a_flush_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that a spill file holds thousands of events, not the handful that came in while
    the last one was written."""
    monkeypatch.setattr("llamalogger._pipeline.backlog._GATHER_INTERVAL", 0.2)
    sink = MemorySink()
    backlog = make_backlog(tmp_path, sink)
    assert backlog.takes_batch(1, 100, asked=False)  # not spilling: every batch at once
    backlog.keep([record(1)], 1, Outcome())
    written = time.monotonic()
    assert backlog.spilling
    assert not backlog.takes_batch(5, 100, asked=False)
    assert backlog.takes_batch(5, 100, asked=True)  # flush() or close() waits
    assert backlog.takes_batch(100, 100, asked=False)  # a whole batch
    wait_until(written + 0.2)
    assert backlog.takes_batch(5, 100, asked=False)


def test_a_disk_that_refused_a_file_asks_for_no_step_once_its_next_try_is_past(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk failed, then the database took the batch: the backlog asks the writer to
    wake for the disk's next try, and then for nothing (a moment in the past would make the
    writer loop without waiting)."""
    sink = MemorySink()
    backlog = make_backlog(tmp_path, sink)

    def read_only(self: SpillDir, rows: object, taken_ns: int) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(SpillDir, "write", read_only)
    backlog.keep([record(1)], 1, Outcome())
    backlog.take_held()  # the writer's part: back to its queue, then to the database
    _, due_at = backlog.step()
    assert due_at > time.monotonic()
    wait_until(due_at)
    assert backlog.step() == (Outcome(), math.inf)


def test_a_disk_with_less_room_than_a_batch_takes_what_fits_in_smaller_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC for a whole batch: it is written in halves, down to the smallest part, in
    order; what still does not fit is held in memory, the rest is on disk and counted."""
    monkeypatch.setattr("llamalogger._pipeline.backlog._SMALLEST_PART", 2)
    sink = MemorySink()
    backlog = make_backlog(tmp_path, sink)
    real_write = SpillDir.write
    room = [6]  # rows the disk still takes

    def small_disk(self: SpillDir, rows: list[tuple[object, ...]], taken_ns: int) -> object:
        if len(rows) > min(room[0], 3):
            raise OSError(errno.ENOSPC, "No space left on device")
        room[0] -= len(rows)
        return real_write(self, rows, taken_ns)

    monkeypatch.setattr(SpillDir, "write", small_disk)
    batch = [record(n) for n in range(10)]
    outcome = Outcome()
    backlog.keep(batch, 1, outcome)
    assert (outcome.on_disk, outcome.spilled, outcome.dropped) == (6, 6, 0)
    assert backlog.take_held() == batch[6:]
    assert len(list((tmp_path / "spill").glob("*.jsonl"))) == 2
    monkeypatch.undo()
    _, due_at = backlog.step()
    wait_until(due_at)  # the disk's next try
    backlog.keep(batch[6:], 2, outcome)
    assert (outcome.on_disk, backlog.holding) == (10, False)
    backlog.step(final=True)
    assert numbers(sink.rows) == list(range(10))
