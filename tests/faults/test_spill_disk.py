"""Spilling onto a real disk that turns against us: a small tmpfs that fills up, and one that
is (or turns) read-only, mounted by the test (it needs root, as CI has; elsewhere it is
skipped with the reason). The database is a real server behind a TCP proxy, cut for the
outage and restored: every event logged is stored exactly once, in the order logged."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from fixtures.waiting import wait_until
from llamalogger import LlamaLogger

if TYPE_CHECKING:  # fixtures' types only
    from conftest import TcpProxy

Mount = Callable[[str], Path]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """``tmpfs(size)`` mounts a tmpfs of ``size`` (``256k``, ``4m``); all are unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        path = tmp_path / f"disk{len(mounts)}"
        path.mkdir()
        done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(path)
        return path

    try:
        yield mount
    finally:
        for path in mounts:
            with contextlib.suppress(subprocess.SubprocessError):
                subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)


def remount(path: Path, mode: str) -> None:
    """Remount ``path`` read-only (``ro``) or writable (``rw``). A file being written keeps
    a read-only remount busy for a moment: tried again until it passes."""
    outcome: list[str] = []

    def remounted() -> bool:
        done = _run("mount", "-o", f"remount,{mode}", str(path))
        outcome[:] = [done.stderr.strip()]
        return done.returncode == 0

    assert wait_until(remounted, timeout=10), outcome


class Outage:
    """A real server behind a proxy that the test cuts and restores, a schema of its own,
    and what the loggers said on the ``llamalogger`` logger."""

    def __init__(
        self, dsn: str, schema: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.proxy = proxy
        self.run = uuid.uuid4().hex  # the events of this test
        self._caplog = caplog
        caplog.set_level(logging.WARNING, logger="llamalogger")

    def logger(self, spill: Path, **options: object) -> LlamaLogger:
        options = {"flush_interval": 0.05, **options}
        return LlamaLogger(
            self.proxy.dsn_for(self.dsn),
            schema=self.schema,
            spill_dir=spill,
            **options,  # type: ignore[arg-type]
        )

    def log(self, logger: LlamaLogger, numbers: range) -> None:
        for number in numbers:
            logger.created(("track", number), run=self.run, title="x" * 100)

    def stored(self) -> list[int]:
        """The numbers of this test's events as stored, in insert order."""
        query = sql.SQL(
            "SELECT entity_id::int FROM {}.llama_log WHERE details->>'run' = %s ORDER BY id"
        ).format(sql.Identifier(self.schema))
        with psycopg.connect(self.dsn) as conn:
            return [row[0] for row in conn.execute(query, (self.run,))]

    def said(self) -> list[str]:
        """What the loggers said; never that a disk's trouble is a bug of theirs."""
        said = [record.getMessage() for record in self._caplog.records]
        assert not any("bug" in line for line in said), said
        return said


@pytest.fixture
def outage(
    dsn: str,
    schema: str,
    tcp_proxy: Callable[[str], TcpProxy],
    caplog: pytest.LogCaptureFixture,
) -> Outage:
    return Outage(dsn, schema, tcp_proxy(dsn), caplog)


def spill_files(spill: Path) -> int:
    """Files waiting, also one that a replay attempt holds claimed at this moment."""
    return sum(not path.name.endswith(".partial") for path in spill.glob("*.jsonl*"))


def all_written(logger: LlamaLogger, count: int) -> bool:
    """Wait until ``count`` events are written: flush() answers once they are on disk, and
    the replay of the files comes after."""
    return wait_until(lambda: logger.stats()["written"] >= count, timeout=60)


def test_a_full_spill_disk_keeps_events_in_memory_and_loses_nothing(
    outage: Outage, tmpfs: Mount
) -> None:
    """The disk fills during an outage (ENOSPC): what does not fit waits in memory, nothing
    is dropped while the queue has room, no half-written file holds space, one warning says
    so; once the server is back the files are replayed, which frees the disk, and every
    event is stored once, in order."""
    outage.proxy.cut()
    spill = tmpfs("256k") / "spill"
    with outage.logger(spill, batch_size=500) as logger:
        outage.log(logger, range(5000))  # about 1 MiB of spill files: four times the disk
        assert not logger.flush(timeout=3)  # part of them has nowhere to go but memory
        stats = logger.stats()
        assert (stats["dropped"], stats["errors"]) == (0, 0), stats
        assert stats["on_disk"] > 0, stats
        assert stats["queued"] > 0, stats
        assert stats["on_disk"] + stats["queued"] == stats["enqueued"] == 5000, stats
        assert not list(spill.glob("*.partial"))
        outage.proxy.restore()
        assert all_written(logger, 5000)
        stats = logger.stats()
        assert (stats["written"], stats["dropped"], stats["on_disk"]) == (5000, 0, 0), stats
    said = outage.said()
    assert sum("cannot write a spill file" in m and "No space left" in m for m in said) == 1
    assert outage.stored() == list(range(5000))
    assert list(spill.iterdir()) == []


def test_with_the_disk_full_and_memory_full_too_events_are_dropped_counted_and_warned_once(
    outage: Outage, tmpfs: Mount
) -> None:
    """Only when neither the disk nor the queue can hold more are events dropped: counted,
    one warning; what was kept is stored once, in order."""
    outage.proxy.cut()
    spill = tmpfs("256k") / "spill"
    options = {"batch_size": 500, "queue_size": 1000, "block_timeout": 0.2}
    with outage.logger(spill, **options) as logger:
        outage.log(logger, range(5000))
        stats = logger.stats()
        assert stats["dropped"] > 0, stats
        assert stats["errors"] == 0, stats
        dropped = stats["dropped"]
        outage.proxy.restore()
        assert all_written(logger, 5000 - dropped)
        stats = logger.stats()
        assert (stats["written"], stats["dropped"]) == (5000 - dropped, dropped), stats
    assert sum("dropped an event" in m for m in outage.said()) == 1
    stored = outage.stored()
    assert len(stored) == 5000 - dropped
    assert stored == sorted(set(stored))


def test_a_read_only_spill_directory_is_found_at_start_and_events_wait_in_memory(
    outage: Outage, tmpfs: Mount
) -> None:
    """An existing spill directory on a read-only filesystem: one warning at start, memory
    only; an outage the queue can hold loses nothing."""
    disk = tmpfs("4m")
    spill = disk / "spill"
    spill.mkdir(mode=0o700)
    remount(disk, "ro")
    with outage.logger(spill) as logger:
        [warning] = [m for m in outage.said() if "spill files" in m]
        assert "Read-only file system" in warning
        assert "in memory only" in warning
        outage.proxy.cut()
        outage.log(logger, range(5000))
        assert not logger.flush(timeout=1)
        assert logger.stats()["dropped"] == 0
        outage.proxy.restore()
        assert logger.flush(timeout=60)
        stats = logger.stats()
        assert (stats["written"], stats["dropped"]) == (5000, 0), stats
    assert outage.stored() == list(range(5000))


@contextlib.contextmanager
def read_only_mid_outage(outage: Outage, tmpfs: Mount) -> Iterator[tuple[LlamaLogger, Path]]:
    """During an outage, 1,000 events go to disk; then the filesystem is remounted read-only
    (EROFS at write) and 2,000 more wait in memory: none dropped, no "bug" report."""
    disk = tmpfs("4m")
    outage.proxy.cut()
    with outage.logger(disk / "spill") as logger:
        outage.log(logger, range(1000))
        assert logger.flush(timeout=10)
        assert logger.stats()["on_disk"] == 1000
        remount(disk, "ro")
        outage.log(logger, range(1000, 3000))
        assert not logger.flush(timeout=2)
        stats = logger.stats()
        assert (stats["dropped"], stats["errors"], stats["queued"]) == (0, 0, 2000), stats
        yield logger, disk


def test_a_spill_filesystem_turned_read_only_during_an_outage_loses_nothing(
    outage: Outage, tmpfs: Mount
) -> None:
    """Remounted writable, the events kept in memory go to disk; with the server back, every
    event is stored once, in order."""
    with read_only_mid_outage(outage, tmpfs) as (logger, disk):
        remount(disk, "rw")
        assert logger.flush(timeout=10)
        assert logger.stats()["on_disk"] == 3000
        outage.proxy.restore()
        assert all_written(logger, 3000)
        stats = logger.stats()
        assert (stats["written"], stats["dropped"]) == (3000, 0), stats
    said = outage.said()
    assert sum("cannot write a spill file" in m and "Read-only" in m for m in said) == 1, said
    assert outage.stored() == list(range(3000))


def test_events_logged_while_spilling_go_into_few_files_replayed_once_in_order(
    outage: Outage, tmp_path: Path
) -> None:
    """30,000 events logged in jobs at a steady pace during an outage: files hold thousands
    of events (a file a second, or a whole batch), not a handful; replayed once, in order."""
    outage.proxy.cut()
    spill = tmp_path / "spill"
    with outage.logger(spill, flush_interval=0.2) as logger:
        started = time.monotonic()
        for number in range(30_000):
            if number % 5 == 0:
                job = logger.job("album")
                job.__enter__()
            logger.created(("track", number), run=outage.run)
            if number % 5 == 4:
                job.__exit__(None, None, None)
            if number % 50 == 49:
                time.sleep(0.005)  # the producer's own work: a steady stream, not a burst
        assert logger.flush(timeout=30)
        seconds = time.monotonic() - started
        files = spill_files(spill)
        stats = logger.stats()
        assert stats["on_disk"] == 36_000, stats  # 30,000 events and 6,000 job records
        # A file a second, one per full batch (20,000), the first one and flush()'s own.
        assert files <= 2 + seconds + 36_000 // 20_000, (files, seconds)
        outage.proxy.restore()
        assert all_written(logger, 36_000)
    print(f"\n[spill files] 30,000 events in {seconds:.1f}s during an outage: {files} files")
    assert outage.stored() == list(range(30_000))


def test_the_server_back_while_the_spill_disk_is_still_read_only_stores_everything_once(
    outage: Outage, tmpfs: Mount
) -> None:
    """The server returns while the filesystem is still read-only: the files that cannot be
    claimed are replayed where they are (their replay mark keeps them exactly once), then the
    events kept in memory behind them follow, then new events go straight to the server,
    all in order; the files stay until the disk lets them go, never replayed twice."""
    with read_only_mid_outage(outage, tmpfs) as (logger, disk):
        outage.proxy.restore()
        assert all_written(logger, 3000)
        outage.log(logger, range(3000, 3100))
        assert logger.flush(timeout=10)
        stats = logger.stats()
        assert (stats["written"], stats["dropped"], stats["errors"]) == (3100, 0, 0), stats
        assert list((disk / "spill").glob("*.jsonl"))  # still there: the disk is read-only
    said = outage.said()
    assert sum("cannot claim spill file" in m for m in said) == 1, said
    assert outage.stored() == list(range(3100))
