"""The background writer: a bounded queue, one daemon thread, batches, flush and close.

Caller threads only append to a deque; the writer thread drains it in batches and
hands each batch to a sink. All counters are written by the writer thread (or under
its lock), so ``stats()`` is a cheap read.
"""

from __future__ import annotations

import atexit
import collections
import enum
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import attrs

from ._postgres import Failure, classify, explain
from ._records import Record
from ._sanitise import MAX_TEXT_LENGTH, clean_row, describe, fast_row
from ._spill import SpillDir

__all__ = ["FullPolicy", "Sink", "Writer"]

diagnostics = logging.getLogger("llamalogger")

FullPolicy = Literal["drop", "block"]

# Backoff between attempts to write a batch the server did not take: quick first
# retries for a blip, capped so that a long outage costs one attempt every 5 s.
_FIRST_RETRY_DELAY = 0.05
_MAX_RETRY_DELAY = 5.0


class Sink(Protocol):
    """Where batches go; ``BatchSink`` writes them to PostgreSQL."""

    def write(self, rows: Sequence[tuple[object, ...]]) -> None: ...

    def write_replay(self, spill_id: str, rows: Sequence[tuple[object, ...]]) -> bool: ...

    def after_fork_in_child(self) -> None: ...

    def close(self) -> None: ...


_live_writers: weakref.WeakSet[Writer] = weakref.WeakSet()
_exit_hook_installed = False


def _close_all_at_exit() -> None:
    for writer in list(_live_writers):
        writer.close(timeout=writer.exit_timeout)


def _after_fork_in_child() -> None:
    for writer in list(_live_writers):
        writer._after_fork_in_child()


class Writer:
    """Queues records and writes them in batches from one background thread."""

    def __init__(
        self,
        sink: Sink,
        *,
        queue_size: int = 100_000,
        batch_size: int = 20_000,
        flush_interval: float = 0.2,
        on_full: FullPolicy = "drop",
        block_timeout: float = 1.0,
        exit_timeout: float = 10.0,
        dead_letter_path: str | os.PathLike[str] | None = None,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        if flush_interval <= 0:
            raise ValueError("flush_interval must be positive")
        if on_full not in ("drop", "block"):
            raise ValueError(f"on_full must be 'drop' or 'block', not {on_full!r}")
        self._sink = sink
        self._maxsize = queue_size
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._on_full = on_full
        self._block_timeout = block_timeout
        self.exit_timeout = exit_timeout
        self._dead_letter_path = Path(dead_letter_path) if dead_letter_path else None
        self._spill = SpillDir(spill_dir) if spill_dir else None
        # While spilling, every batch goes to a spill file, so that the order of events
        # survives the outage; the files are replayed, oldest first, before writing resumes.
        self._spilling = False
        self._replay_at = 0.0
        self._replay_delay = _FIRST_RETRY_DELAY
        self._own_spill: dict[str, int] = {}  # this writer's pending spill files: events each

        self._queue: collections.deque[Record] = collections.deque()
        self._wake = threading.Event()
        # Guards the counters below and the hand-over of records from queue to batch,
        # so that flush() can tell exactly which records were logged before it.
        self._lock = threading.Condition(threading.Lock())
        self._taken = 0  # records moved from the queue into a batch
        self._done = 0  # of those: written, rejected or given up on
        self._written = 0
        self._rejected = 0
        self._retried = 0
        self._sanitised = 0
        self._dropped = 0
        self._batches = 0
        self._spilled = 0
        self._replayed = 0
        self._lost_at_close = 0
        self._abandoned = 0  # taken into a batch, then given up on when close() ran out of time
        self._warned_full = False
        self._closing = False
        self._closed = False
        self._deadline: float | None = None  # when closing: give up retrying after this
        self._thread: threading.Thread | None = None
        self._start_thread()
        _install_process_hooks()
        _live_writers.add(self)

    # --- caller side -------------------------------------------------------------

    def put(self, record: Record) -> None:
        """Queue ``record``; never raises, never blocks longer than the policy allows."""
        queue = self._queue
        if len(queue) >= self._maxsize or self._closing:
            self._put_when_full(record)
            return
        queue.append(record)
        if len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    def _put_when_full(self, record: Record) -> None:
        if self._closing:
            self._drop("the logger is closed")
            return
        if self._on_full == "block":
            self._wake.set()
            deadline = time.monotonic() + self._block_timeout
            while time.monotonic() < deadline:
                time.sleep(0.001)
                if len(self._queue) < self._maxsize:
                    self._queue.append(record)
                    return
        self._drop(f"the queue is full ({self._maxsize} records)")

    def _drop(self, reason: str) -> None:
        with self._lock:
            self._dropped += 1
            warn = not self._warned_full
            self._warned_full = True
        if warn:
            diagnostics.warning(
                "llamalogger dropped an event because %s; further drops are only counted "
                "in stats()['dropped']",
                reason,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued before this call is written (or rejected).

        Returns ``False`` if that did not happen within ``timeout`` seconds.
        """
        with self._lock:
            target = self._taken + len(self._queue)
            self._wake.set()
            return self._lock.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Write what is queued, stop the thread and close the sink. Safe to call twice.

        With the database unreachable, retrying stops after ``timeout`` seconds (default
        ``exit_timeout``); records still queued then (or stuck in a hanging write) are
        counted as dropped and reported, unless a spill directory keeps them. Returns
        ``True`` when nothing was lost.
        """
        if timeout is None:
            timeout = self.exit_timeout
        with self._lock:
            if self._closed:
                return self._lost_at_close == 0
            self._closing = True
            self._deadline = time.monotonic() + timeout
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # The writer notices the deadline between attempts; one attempt can take up
            # to the pool's connection timeout on top.
            thread.join(timeout + 3.0)
        with self._lock:
            self._closed = True
            leftover = len(self._queue)
            self._queue.clear()
            # A writer still busy after the join is stuck in a write (a stalled network, a
            # lock): its batch is not known to be committed, so it counts as lost too.
            stuck = 0
            if thread is not None and thread.is_alive():
                stuck = self._taken - self._done - sum(self._own_spill.values())
            self._dropped += leftover + stuck
            self._done += leftover + stuck
            self._taken += leftover
            self._lock.notify_all()
            lost = self._lost_at_close = leftover + stuck + self._abandoned
        if lost:
            diagnostics.error(
                "llamalogger closed with %d events not written within the %.1fs close() waits "
                "(database unreachable, or a write hanging); they are counted in "
                "stats()['dropped']",
                lost,
                timeout,
            )
        spilled = sum(self._own_spill.values())
        if spilled and self._spill is not None:
            diagnostics.warning(
                "llamalogger closed with %d events in spill files in %s; a logger with this "
                "spill_dir writes them once it reaches the database",
                spilled,
                self._spill.path,
            )
        self._sink.close()
        _live_writers.discard(self)
        return lost == 0

    def stats(self) -> dict[str, int]:
        """Counters: see ``LlamaLogger.stats()`` for their meaning."""
        with self._lock:
            depth = len(self._queue)
            return {
                "enqueued": self._taken + depth,
                "written": self._written,
                "dropped": self._dropped,
                "retried": self._retried,
                "rejected": self._rejected,
                "sanitised": self._sanitised,
                "batches": self._batches,
                "spilled": self._spilled,
                "replayed": self._replayed,
                "queue_depth": depth,
            }

    # --- writer thread -----------------------------------------------------------

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llamalogger-writer", daemon=True)
        self._thread.start()

    def _take_batch(self) -> list[Record]:
        queue = self._queue
        with self._lock:
            count = min(len(queue), self._batch_size)
            batch = [queue.popleft() for _ in range(count)]
            self._taken += count
        return batch

    def _run(self) -> None:
        if self._spill is not None and self._spill.pending():
            self._spilling = True  # batches left by an earlier run go first
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            if self._spilling:
                self._replay()
            while batch := self._take_batch():
                try:
                    self._write_batch(batch)
                except Exception:  # the thread must outlive any bug in handling one batch
                    self._lose_batch(batch)
            if self._closing:
                while self._spilling:
                    self._replay(now=True)
                    if self._spilling and self._give_up_now(self._replay_delay):
                        break
                return

    def _lose_batch(self, batch: list[Record]) -> None:
        diagnostics.exception(
            "llamalogger failed to handle a batch of %d events; they are counted in "
            "stats()['dropped']. This is a bug in llamalogger: please report it",
            len(batch),
        )
        with self._lock:
            self._dropped += len(batch)
            self._done += len(batch)
            self._lock.notify_all()

    def _write_batch(self, batch: list[Record]) -> None:
        outcome = _Outcome()
        rows: list[tuple[object, ...]] = []
        append = rows.append
        sanitised_already: set[int] = set()  # positions fast_row had to clean (rare)
        for record in batch:
            message = record[3]
            # Most records go to COPY exactly as logged; this check is fast_row's own
            # first step, inlined because it runs once per event on the writer thread.
            if record[12] is None and message is not None and len(message) <= MAX_TEXT_LENGTH:
                append(record)
            else:
                row, changed = fast_row(record)
                if changed:
                    sanitised_already.add(len(rows))
                append(row)
        outcome.sanitised += len(sanitised_already)
        if self._write_or_keep(rows, batch, outcome) is not None:
            self._write_cleaned(batch, sanitised_already, outcome)
        with self._lock:
            self._spilled += outcome.spilled
            self._written += outcome.written
            self._rejected += outcome.rejected
            self._dropped += outcome.given_up
            self._abandoned += outcome.given_up
            self._sanitised += outcome.sanitised
            self._done += len(batch) - outcome.spilled  # spilled: done once replayed
            self._batches += 1
            self._lock.notify_all()

    def _write_cleaned(
        self, records: list[Record], sanitised_already: set[int], outcome: _Outcome
    ) -> None:
        """The server refused a batch: retry it with every text made storable, then
        bisect what is still refused so that only the bad rows are lost."""
        rows: list[tuple[object, ...]] = []
        for position, record in enumerate(records):
            row, changed = clean_row(record)
            rows.append(row)
            if changed and position not in sanitised_already:
                outcome.sanitised += 1
        self._bisect(rows, records, outcome)

    def _write_or_keep(
        self, rows: list[tuple[object, ...]], records: list[Record], outcome: _Outcome
    ) -> Exception | None:
        """Write ``rows`` (to a spill file while spilling) and count what became of them;
        returns the server's refusal, if it refused them."""
        result = _Attempt.SPILL if self._spilling else self._write_with_retry(rows)
        if result is _Attempt.WRITTEN:
            outcome.written += len(rows)
        elif result is _Attempt.GIVEN_UP:
            outcome.given_up += len(rows)
        elif result is _Attempt.SPILL:
            # Spilled rows are always the cleaned ones: a replay must not be refused.
            self._spill_rows([clean_row(record)[0] for record in records], outcome)
        else:
            return result
        return None

    def _bisect(
        self, rows: list[tuple[object, ...]], records: list[Record], outcome: _Outcome
    ) -> None:
        refused = self._write_or_keep(rows, records, outcome)
        if refused is None:
            return
        if len(rows) == 1:
            outcome.rejected += 1
            self._dead_letter(records[0], refused)
        else:
            middle = len(rows) // 2
            self._bisect(rows[:middle], records[:middle], outcome)
            self._bisect(rows[middle:], records[middle:], outcome)

    def _write_with_retry(
        self, rows: list[tuple[object, ...]], *, spill: bool = True
    ) -> _Attempt | Exception:
        """Write ``rows``, retrying while the server is unreachable (or, with a spill
        directory, returning ``SPILL`` at the first failure).

        Returns the exception when the server refused the data.
        """
        delay = _FIRST_RETRY_DELAY
        failing_since: float | None = None
        while True:
            attempt_started = time.monotonic()
            try:
                self._sink.write(rows)
            except Exception as exc:
                if classify(exc) is Failure.REJECT:
                    return exc
                if failing_since is None:
                    failing_since = attempt_started
                    diagnostics.warning(
                        "llamalogger cannot write to the database, retrying with backoff "
                        "(events are kept): %s",
                        explain(exc),
                    )
                with self._lock:
                    self._retried += 1
                if self._spill is not None and spill:
                    self._spilling = True
                    self._replay_at = time.monotonic() + self._replay_delay
                    return _Attempt.SPILL
                if self._give_up_now(delay):
                    return _Attempt.GIVEN_UP
                delay = min(delay * 2, _MAX_RETRY_DELAY)
            else:
                if failing_since is not None:
                    diagnostics.warning(
                        "llamalogger reached the database again after %.1fs",
                        time.monotonic() - failing_since,
                    )
                return _Attempt.WRITTEN

    def _give_up_now(self, delay: float) -> bool:
        """Sleep ``delay`` before the next attempt; True once closing has run out of time."""
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                return True
            delay = min(delay, remaining)
        time.sleep(delay)
        return False

    def _spill_rows(self, rows: list[tuple[object, ...]], outcome: _Outcome) -> None:
        assert self._spill is not None
        try:
            path = self._spill.write(rows)
        except OSError as exc:
            diagnostics.error(
                "llamalogger cannot write a spill file in %s (%s); keeping the events in "
                "memory and retrying the database instead",
                self._spill.path,
                exc,
            )
            result = self._write_with_retry(rows, spill=False)
            if result is _Attempt.WRITTEN:
                outcome.written += len(rows)
            else:  # given up at close, or refused: nothing more can be done for them
                outcome.given_up += len(rows)
            return
        self._own_spill[path.name] = len(rows)
        outcome.spilled += len(rows)

    def _replay(self, *, now: bool = False) -> None:
        """Write the spill files, oldest first; leave spilling mode once none is left."""
        assert self._spill is not None
        if not now and time.monotonic() < self._replay_at:
            return
        for file in self._spill.pending():
            try:
                rows = self._spill.read(file)
            except (OSError, ValueError) as exc:
                aside = self._spill.set_aside(file, "unreadable")
                diagnostics.error("llamalogger cannot read spill file %s: %s", aside, exc)
                self._settle_spill_file(file.name, stored=0, rejected=True)
                continue
            try:
                inserted = self._sink.write_replay(self._spill.spill_id(file), rows)
            except Exception as exc:
                if classify(exc) is Failure.REJECT:
                    aside = self._spill.set_aside(file, "rejected")
                    diagnostics.error(
                        "llamalogger: the database refused spill file %s (%s)", aside, explain(exc)
                    )
                    self._settle_spill_file(file.name, stored=0, rejected=True)
                    continue
                with self._lock:
                    self._retried += 1
                self._replay_at = time.monotonic() + self._replay_delay
                self._replay_delay = min(self._replay_delay * 2, _MAX_RETRY_DELAY)
                return
            file.unlink(missing_ok=True)
            # Not inserted: an earlier replay of this file had committed already.
            self._settle_spill_file(file.name, stored=len(rows), replayed=inserted)
        self._spilling = False
        self._replay_delay = _FIRST_RETRY_DELAY
        diagnostics.warning("llamalogger wrote every spilled event; writing directly again")

    def _settle_spill_file(
        self, name: str, *, stored: int, replayed: bool = False, rejected: bool = False
    ) -> None:
        """Count a spill file that is dealt with: ``stored`` of its events are in the table."""
        events = self._own_spill.pop(name, None)
        with self._lock:
            self._replayed += stored if replayed else 0
            if events is not None:  # this writer's own events: they count for flush()
                self._written += stored
                self._rejected += events if rejected else 0
                self._done += events
                self._lock.notify_all()

    def _dead_letter(self, record: Record, exc: BaseException) -> None:
        """Keep a record the database refused: in the dead-letter file if there is one,
        and always in the diagnostics log."""
        entry = {
            "reason": explain(exc),
            "sqlstate": getattr(exc, "sqlstate", None),
            "event": describe(record),
        }
        line = json.dumps(entry, ensure_ascii=False, default=repr)
        if self._dead_letter_path is not None:
            try:
                with self._dead_letter_path.open("a", encoding="utf-8") as file:
                    file.write(line + "\n")
            except OSError as error:
                diagnostics.error("llamalogger cannot write its dead-letter file: %s", error)
        diagnostics.error("llamalogger: the database rejected an event: %s", line)

    # --- process life ------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        # The parent's queued records belong to the parent's writer: writing them here
        # too would store them twice. The child starts empty with a pool of its own.
        self._queue.clear()
        self._lock = threading.Condition(threading.Lock())
        self._wake = threading.Event()
        self._taken = self._done = self._written = self._rejected = 0
        self._retried = self._sanitised = self._dropped = self._batches = 0
        self._warned_full = False
        self._spilled = self._replayed = 0
        self._own_spill = {}
        self._spilling = False
        self._sink.after_fork_in_child()
        if not self._closing:
            self._start_thread()


class _ProcessHooks:
    """The anchor of the multiprocessing after-fork registration (it must be weak-referable)."""


_process_hooks = _ProcessHooks()


def _arm_multiprocessing_exit(_anchor: object) -> None:
    # multiprocessing children end with os._exit, skipping atexit; they do run the
    # finalizers registered after their start, so closing the writers goes there.
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _close_all_at_exit, exitpriority=100)


def _install_process_hooks() -> None:
    global _exit_hook_installed  # noqa: PLW0603 - one process-wide registration
    if not _exit_hook_installed:
        _exit_hook_installed = True
        atexit.register(_close_all_at_exit)
        os.register_at_fork(after_in_child=_after_fork_in_child)
        import multiprocessing.util

        multiprocessing.util.register_after_fork(_process_hooks, _arm_multiprocessing_exit)


@attrs.define
class _Outcome:
    """What became of one batch's records."""

    written: int = 0
    rejected: int = 0
    given_up: int = 0
    sanitised: int = 0
    spilled: int = 0


class _Attempt(enum.Enum):
    """How writing rows ended, when it did not end with the server refusing them."""

    WRITTEN = "written"
    GIVEN_UP = "given up"  # close() ran out of time while the server was unreachable
    SPILL = "spill"  # unreachable, and there is a spill directory: keep the rows on disk
