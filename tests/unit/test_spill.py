"""Spill files on their own: permissions, the target they record, claims, the size cap, and
a disk that refuses them (at start, or at any step of writing one)."""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from llamalogger._pipeline import Settings, Writer, open_writer
from llamalogger._pipeline.spill import (
    SpillDir,
    SpillFull,
    SpillUnreadable,
    default_spill_root,
    target_dirname,
)

from .test_writer import TARGET, MemorySink, assert_adds_up, numbers, put, record

ROW = record(1)


def test_files_are_private_and_name_their_target_without_a_password(tmp_path: Path) -> None:
    spill = SpillDir(tmp_path / "a" / "b", TARGET, 1 << 20)
    file = spill.write([ROW], 1)
    assert stat.S_IMODE(os.stat(spill.path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(file.path).st_mode) == 0o600
    target, rows = spill.read(file)
    assert target == TARGET
    assert rows == [ROW]


def test_a_claimed_file_is_skipped_by_the_next_claimer_without_error(tmp_path: Path) -> None:
    first = SpillDir(tmp_path, TARGET, 1 << 20)
    second = SpillDir(tmp_path, TARGET, 1 << 20)
    file = first.write([ROW], 1)
    claimed = first.claim(file)
    assert claimed is not None
    assert second.claim(file) is None  # gone from under its old name: another took it
    assert first.pending() == [claimed]  # its own claim stays visible to the claimer
    assert second.pending() == []  # a live claimant's file, even in the same process


def test_a_claim_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    spill = SpillDir(tmp_path, TARGET, 1 << 20)
    file = spill.write([ROW], 1)
    dead_pid = 2**22 + 12345  # above the kernel's pid_max default
    file.path.rename(tmp_path / f"{file.spill_id}.jsonl.claimed-{dead_pid}")
    [orphan] = spill.pending()
    taken = spill.claim(orphan)
    assert taken is not None
    assert f".claimed-{os.getpid()}-" in taken.path.name


def test_the_size_cap_refuses_a_batch_that_would_pass_it(tmp_path: Path) -> None:
    spill = SpillDir(tmp_path, TARGET, 600)
    spill.write([ROW], 1)
    with pytest.raises(SpillFull):
        spill.write([ROW] * 10, 2)


def test_each_target_gets_a_directory_of_its_own_under_the_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_spill_root() == tmp_path / "llamalogger" / "spill"
    other_schema = {**TARGET, "schema": "other"}
    assert target_dirname(TARGET) != target_dirname(other_schema)
    assert "/" not in target_dirname({**TARGET, "host": "/var/run/postgresql"})


def test_files_for_another_target_are_left_alone(tmp_path: Path) -> None:
    foreign = SpillDir(tmp_path, {**TARGET, "dbname": "elsewhere"}, 1 << 20)
    foreign.write([ROW], 1)
    sink = MemorySink()
    writer = open_writer(sink, Settings(flush_interval=0.01, spill_dir=tmp_path))
    put(writer, record(2))
    assert writer.flush(timeout=5)
    assert writer.close(timeout=5)
    assert numbers(sink.rows) == [2]
    assert len(list(tmp_path.glob("*.jsonl"))) == 1


def test_past_the_cap_events_are_dropped_counted_and_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = MemorySink()
    sink.down = True
    settings = Settings(
        flush_interval=0.01, batch_size=10, spill_max_bytes=3000, spill_dir=tmp_path
    )
    writer = open_writer(sink, settings)
    with caplog.at_level(logging.ERROR, logger="llamalogger"):
        for number in range(200):
            put(writer, record(number))
        assert writer.flush(timeout=5)
    stats = writer.stats()
    assert stats["dropped"] > 0
    assert stats["on_disk"] > 0
    assert stats["enqueued"] == stats["dropped"] + stats["on_disk"]
    assert sum("reached its cap" in r.getMessage() for r in caplog.records) == 1
    writer.close(timeout=0.5)


def test_a_spill_directory_that_cannot_be_made_means_one_warning_and_memory_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Like a read-only filesystem: the logger still works, keeping events in memory."""
    from llamalogger import LlamaLogger

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="llamalogger"):
        logger = LlamaLogger("postgresql://nobody@127.0.0.1:1/x", spill_dir=blocker / "spill")
        logger.created(("track", 1))
        logger.close(timeout=0.2)
    warnings = [r.getMessage() for r in caplog.records if "spill files" in r.getMessage()]
    assert len(warnings) == 1
    assert "in memory only" in warnings[0]
    assert logger.stats()["dropped"] == 1  # nowhere to keep it once close() gave up


def test_event_and_job_rows_come_back_as_written_with_details_last(tmp_path: Path) -> None:
    """One file holds both kinds of row; each keeps its length and its jsonb details."""
    event = (*record(1)[:12], b'\x01{"score": 0.5}')
    job = (2_000_000, "JOB", "failed", "KeyError: 'x'", "j2", "j1", "j1", "enrich", "track",
           "9", "KeyError", 1_000_000, 2, 4242, "worker-1", b'\x01{"queue": "q"}')  # fmt: skip
    bare_job = (*job[:15], None)
    spill = SpillDir(tmp_path, TARGET, 1 << 20)
    file = spill.write([event, job, bare_job, ROW], 1)
    _, rows = spill.read(file)
    assert rows == [event, job, bare_job, ROW]


def test_a_file_of_an_earlier_version_still_reads(tmp_path: Path) -> None:
    """Files written before job records existed: thirteen fields a line, details last."""
    spill = SpillDir(tmp_path, TARGET, 1 << 20)
    old = tmp_path / "00000000000000000001-1-000000.jsonl"
    old.write_text(
        '{"llamalogger_spill": 1, "target": {"host": "h", "port": "5432", "dbname": "d", '
        '"schema": "s"}}\n'
        '[1, "CREATED", "info", "m", null, null, null, null, "track", "1", null, null, '
        '"{\\"a\\": 1}"]\n',
        encoding="utf-8",
    )
    [file] = spill.pending()
    target, rows = spill.read(file)
    assert target == TARGET
    assert rows == [
        (
            1,
            "CREATED",
            "info",
            "m",
            None,
            None,
            None,
            None,
            "track",
            "1",
            None,
            None,
            b'\x01{"a": 1}',
        )
    ]


def test_a_write_the_disk_refuses_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC at fsync: the error reaches the caller, and neither the half-written file nor
    its bytes stay behind to hold space against the cap."""
    spill = SpillDir(tmp_path, TARGET, 1 << 20)
    kept = spill.write([ROW], 1)

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        spill.write([ROW] * 5, 2)
    monkeypatch.undo()
    assert sorted(path.name for path in tmp_path.iterdir()) == [kept.path.name]
    assert spill.pending() == [kept]
    # The cap counts only what is on disk: a new SpillDir over the directory agrees.
    assert spill._bytes == SpillDir(tmp_path, TARGET, 1 << 20)._bytes == kept.path.stat().st_size


def test_partial_files_of_dead_writers_are_swept_at_start(tmp_path: Path) -> None:
    """A writer killed mid-write leaves a partial file: the next SpillDir over the directory
    removes it, unless its writer still lives (it may be writing it now)."""
    dead_pid = 2**22 + 12345  # above the kernel's pid_max default
    dead = tmp_path / f"{1:020d}-{dead_pid}-000000.jsonl.partial"
    live = tmp_path / f"{2:020d}-{os.getppid()}-000000.jsonl.partial"
    for path in (dead, live):
        path.write_bytes(b"x" * 1000)
    spill = SpillDir(tmp_path, TARGET, 1 << 20)
    assert not dead.exists()
    assert live.exists()
    assert spill.pending() == []  # a partial file is never replayed


def test_a_spill_directory_that_cannot_be_written_means_one_warning_and_memory_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An existing directory on a read-only filesystem is found out at start, by creating and
    removing a file: one warning, memory only, instead of losing the first outage's events."""
    from llamalogger._pipeline import _open_spill

    real_open = os.open

    def read_only(path: object, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".partial"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, mode)  # type: ignore[arg-type]

    settings = Settings(spill_dir=tmp_path)
    assert _open_spill(MemorySink(), settings) is not None  # writable: used, nothing left
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "open", read_only)
    with caplog.at_level(logging.WARNING, logger="llamalogger"):
        assert _open_spill(MemorySink(), settings) is None
    warnings = [r.getMessage() for r in caplog.records if "spill files" in r.getMessage()]
    assert len(warnings) == 1
    assert "Read-only file system" in warnings[0]
    assert "in memory only" in warnings[0]


def spilling_writer(tmp_path: Path, **options: object) -> tuple[Writer, MemorySink]:
    """A writer into a sink that is down, so that every batch goes to ``tmp_path/spill``."""
    sink = MemorySink()
    sink.down = True
    options = {"flush_interval": 0.01, "spill_dir": tmp_path / "spill", **options}
    return open_writer(sink, Settings(**options)), sink  # type: ignore[arg-type]


class _RefusedWrites:
    """A file whose writes the disk refuses (a full disk), closing its descriptor."""

    def __init__(self, descriptor: int, *args: object, **kwargs: object) -> None:
        os.close(descriptor)

    def __enter__(self) -> _RefusedWrites:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def _refuse_creating(monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def refused(path: object, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".partial"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refused)


def _refuse_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fdopen", _RefusedWrites)


def _refuse_syncing(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(descriptor: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)


def _refuse_renaming(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: Path, target: object) -> Path:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(Path, "replace", refused)


SPILL_STEPS = {
    "creating the file": _refuse_creating,
    "writing it": _refuse_writing,
    "syncing it": _refuse_syncing,
    "renaming it": _refuse_renaming,
}


@pytest.mark.parametrize("step", sorted(SPILL_STEPS))
def test_a_spill_file_the_disk_refuses_keeps_its_events_in_memory_until_it_takes_them(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    step: str,
) -> None:
    """The disk refuses a spill file at any step of writing it (ENOSPC, EROFS, EIO, EDQUOT):
    no event is dropped while the queue has room, no "bug" is reported, one warning says the
    events are kept in memory; once the disk takes files, they go there, and once the
    database is back every event is written once, in order."""
    writer, sink = spilling_writer(tmp_path, batch_size=10)
    spill_dir = tmp_path / "spill"
    try:
        with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, "llamalogger"):
            SPILL_STEPS[step](patch)
            for number in range(50):
                put(writer, record(number))
            assert not writer.flush(timeout=0.5)  # nowhere to put them: they wait in memory
            stats = writer.stats()
            assert (stats["dropped"], stats["errors"], stats["on_disk"]) == (0, 0, 0), stats
            assert stats["queued"] == 50, stats
            assert_adds_up(stats)
        messages = [r.getMessage() for r in caplog.records]
        assert sum("cannot write a spill file" in m for m in messages) == 1, messages
        assert not any("bug" in m for m in messages), messages
        assert not list(spill_dir.glob("*.partial"))
        with caplog.at_level(logging.WARNING, "llamalogger"):
            assert writer.flush(timeout=10)  # the disk takes files again
        assert sum("writes spill files" in r.getMessage() for r in caplog.records) == 1
        stats = writer.stats()
        assert (stats["on_disk"], stats["dropped"], stats["spilled"]) == (50, 0, 50), stats
        sink.down = False
        assert writer.close(timeout=10)
    finally:
        writer.close(timeout=1)
    assert numbers(sink.rows) == list(range(50))
    assert writer.stats()["written"] == 50


def test_with_the_disk_refusing_and_memory_full_events_are_dropped_counted_and_warned_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only when the queue is full too are events dropped: counted, one warning; what was
    kept is written, in order, once the disk and the database take it."""
    writer, sink = spilling_writer(tmp_path, batch_size=10, queue_size=100, block_timeout=0.1)
    try:
        with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, "llamalogger"):
            _refuse_creating(patch)
            for number in range(300):
                put(writer, record(number))
            stats = writer.stats()
            assert stats["dropped"] > 0, stats
            assert stats["errors"] == 0, stats
            assert_adds_up(stats)
        dropped = stats["dropped"]
        drop_warnings = [r for r in caplog.records if "dropped an event" in r.getMessage()]
        assert len(drop_warnings) == 1
        sink.down = False
        assert writer.close(timeout=10)
    finally:
        writer.close(timeout=1)
    stored = numbers(sink.rows)
    assert stored == sorted(set(stored))
    assert len(stored) == 300 - dropped == writer.stats()["written"]


def test_a_trickle_of_events_while_spilling_goes_into_few_files(tmp_path: Path) -> None:
    """While spilling, events gather in the queue for up to a second (or a whole batch)
    before they go into a file: a trickle makes a file a second, not one per wake-up."""
    writer, sink = spilling_writer(tmp_path, batch_size=1000)
    spill_dir = tmp_path / "spill"
    try:
        started = time.monotonic()
        for number in range(300):
            put(writer, record(number))
            time.sleep(0.002)  # the producer's pace, about 400 events a second
        assert writer.flush(timeout=5)
        seconds = time.monotonic() - started
        # Waiting files, also one that a replay attempt holds claimed at this moment.
        files = sum(not path.name.endswith(".partial") for path in spill_dir.glob("*.jsonl*"))
        # The first batch, then one file a second, and the one flush() asked for.
        assert files <= 2 + seconds, (files, seconds)
        sink.down = False
        assert writer.close(timeout=10)
    finally:
        writer.close(timeout=1)
    assert numbers(sink.rows) == list(range(300))


def test_while_spilling_a_queue_smaller_than_a_batch_is_taken_when_full(tmp_path: Path) -> None:
    """Events gather for a file only up to what the queue holds: a full queue is a full
    batch, so callers never wait for room while the writer waits for more events."""
    writer, _ = spilling_writer(tmp_path, queue_size=50, batch_size=1000, block_timeout=0.3)
    try:
        for number in range(500):
            put(writer, record(number))
        assert writer.flush(timeout=5)
        stats = writer.stats()
        assert (stats["dropped"], stats["on_disk"]) == (0, 500), stats
    finally:
        writer.close(timeout=1)


def test_rows_are_counted_at_once_and_parsed_only_as_they_are_taken(tmp_path: Path) -> None:
    """A replay streams a file into its COPY: a bad line in the middle is met when the rows
    before it have been taken, and names its row; the count needs no parsing."""
    spill = SpillDir(tmp_path, TARGET, 1 << 20)
    file = spill.write([record(n) for n in range(5)], 1)
    lines = file.path.read_bytes().splitlines()
    lines[3] = b"[not json"  # the header, two good rows, then the bad one
    file.path.write_bytes(b"\n".join(lines) + b"\n")
    target, rows = spill.open(file)
    assert (target, len(rows)) == (TARGET, 5)
    taken: list[tuple[object, ...]] = []
    with pytest.raises(SpillUnreadable, match="row 3") as caught:
        taken.extend(rows)
    assert numbers(taken) == [0, 1]
    assert caught.value.spill_id == file.spill_id
    again: list[tuple[object, ...]] = []
    with pytest.raises(SpillUnreadable, match="row 3"):
        again.extend(rows)  # a retry: what was parsed is kept, the bad line stays bad
    assert again == taken
