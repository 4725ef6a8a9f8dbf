"""The background writer: one daemon thread that takes batches off the ``Intake``, hands
each to ``Delivery`` and steps the ``Backlog`` (spill files and their replay) with one
call; ``flush``, ``close`` and the process hooks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from .._records import Record
from . import process
from .backlog import Backlog
from .delivery import Delivery
from .diagnostics import Reporter, diagnostics
from .intake import Intake
from .ledger import Outcome
from .retry import Deadline, Outage
from .settings import Settings
from .sink import Sink
from .spill import SpillDir

__all__ = ["Writer"]

# What close() keeps of its timeout once the writer stops waiting for the database: for
# it to settle its batch, to cancel a write still going (a slow server, or one that never
# answers) and to put what is left on disk, so that close() returns within its timeout.
# With a spill directory half of it, 5 s at most (a full queue of 100,000 events takes 3-4 s
# to write to disk on a loaded 2-core machine); without one a quarter, 1 s at most.
_SPILL_RESERVE = 5.0
_CANCEL_RESERVE = 1.0
# How soon a cancel is sent again: one that came between two writes cancels nothing.
_CANCEL_AGAIN = 0.1
# Events put on disk (or written) at a time by close() itself: between two, it looks at
# its deadline, so a slow disk cannot hold it much past its timeout.
_LEFTOVER_CHUNK = 5_000


class Writer:
    """Queues records and writes them in batches from one background thread."""

    def __init__(self, sink: Sink, settings: Settings, spill: SpillDir | None) -> None:
        """Start writing to ``sink``, keeping batches in ``spill`` during outages (none:
        in memory only). ``open_writer`` builds one from ``Settings`` alone."""
        self._sink = sink
        self._flush_interval = settings.flush_interval
        # A full batch, for the backlog's gathering: never more than the queue can hold, or
        # callers would wait for room while the writer waits for more events.
        self._batch_size = min(settings.batch_size, settings.queue_size)
        # Records the disk refused (a full or read-only spill disk): unsettled, in hand, and
        # delivered again before anything queued once the backlog says (takes_batch).
        self._held: Sequence[Record] = []
        # The bounds of the end of a task (process.deliver_all) and of close().
        self.block_timeout = settings.block_timeout
        self.exit_timeout = settings.exit_timeout
        self._reporter = Reporter()
        # The moment close() stops waiting for the database: set here, read by both parts.
        self._deadline = Deadline()
        self._outage = Outage(f"on disk in {spill.path}" if spill is not None else "in memory")
        self._backlog = Backlog(sink, spill, self._reporter, self._outage, self._deadline)
        self._delivery = Delivery(
            sink,
            self._backlog,
            dead_letter_path=settings.dead_letter_path,
            reporter=self._reporter,
            outage=self._outage,
            deadline=self._deadline,
        )
        self._intake = Intake(
            settings, self._reporter, sink.cancel if spill is not None else None, sink.progress
        )
        self.put_apart = self._intake.put_apart  # the hot path, with no call in between
        self._close_result = True
        self._thread: threading.Thread | None = None
        self._start_thread()
        process.register(self)

    # --- caller side -------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued before this call is written, on disk for replay,
        or dead-lettered. ``False`` if that did not happen within ``timeout`` seconds."""
        return self._intake.flush(timeout)

    def cancel_write(self) -> None:
        """Cancel a write in progress (from another thread), so that the writer can put
        its batch on disk instead of waiting for a server that does not answer."""
        self._sink.cancel()

    def report_undelivered(self, waited: float) -> None:
        """Say that the end of a task left events undelivered after ``waited`` seconds."""
        diagnostics.error(
            "llamalogger: a task or a forked child's outermost job ended with %d events not "
            "delivered after %.1fs (database unreachable and no spill directory, or a write "
            "hanging); a process that ends now without close() loses them",
            self.stats()["queued"],
            waited,
        )

    def close(self, timeout: float | None = None) -> bool:
        """Write what is queued, stop the thread and close the sink. Safe to call twice.

        Returns within ``timeout`` seconds (default ``exit_timeout``), give or take one
        chunk of disk work. With the database unreachable, events go to the spill directory
        (if any) until then, or are retried until then (without one). Returns
        ``True`` when nothing was lost; what was lost is counted in ``dropped`` and
        reported, what waits on disk is reported too.
        """
        if timeout is None:
            timeout = self.exit_timeout
        if self._intake.closing:  # twice: the same answer
            return self._close_result
        # Set before closing begins, so that the writer thread never sees one without it.
        closes_at = time.monotonic() + timeout
        if self._backlog.enabled:
            reserve = min(_SPILL_RESERVE, timeout / 2)
        else:
            reserve = min(_CANCEL_RESERVE, timeout / 4)
        # The writer stops waiting for the database a reserve before close() must return.
        self._deadline.set(closes_at - reserve)
        dropped_before = self._intake.close()
        if dropped_before is None:  # another thread's close() came first
            return self._close_result
        stuck = self._stop_thread(timeout, reserve)
        leftover, abandoned = self._intake.drain(stuck=stuck)
        # What the disk refused goes first (a stuck writer's is in the batch given up on).
        held = [] if stuck else self._held
        self._held = []
        records: Sequence[Record] = [*held, *leftover] if held else leftover
        kept = self._deliver_leftover(records, stuck, closes_at)
        final = self._intake.finish(len(records), kept, abandoned)
        lost = final["dropped"] - dropped_before
        self._close_result = lost == 0
        if lost:
            diagnostics.error(
                "llamalogger closed with %d events not written within the %.1fs close() waits "
                "(database unreachable without a spill directory, or a write that never "
                "returned); they are counted in stats()['dropped']",
                lost,
                timeout,
            )
        self._backlog.report_left(final["on_disk"])
        if not stuck:  # a connection in use by a stuck thread must not be closed under it
            self._sink.close()
        process.unregister(self)
        return self._close_result

    def _stop_thread(self, timeout: float, reserve: float) -> bool:
        """Let the writer finish within ``timeout`` less part of ``reserve`` (its deadline
        for the database is ``reserve`` before the end); True if it is stuck in a write."""
        self._intake.wake()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return False
        ends = time.monotonic() + timeout
        # Half the reserve for the writer to settle its batch once its deadline has passed.
        thread.join(timeout - reserve / 2)
        # Still in a write (a lock, a stalled network, a slow server): cancel it, again until
        # it ends, keeping a quarter of the reserve for what is left to go to disk.
        cancel_until = ends - reserve / 4
        while thread.is_alive() and (left := cancel_until - time.monotonic()) > 0:
            self._sink.cancel(timeout=left)
            thread.join(min(_CANCEL_AGAIN, max(0.0, cancel_until - time.monotonic())))
        return thread.is_alive()

    def _deliver_leftover(
        self, leftover: Sequence[Record], stuck: bool, closes_at: float
    ) -> Outcome:
        """Events logged while the writer finished: one attempt, else to disk, a chunk at
        a time until ``closes_at``; what is left then is dropped (counted)."""
        kept = Outcome()
        if not leftover:
            return kept
        self._deadline.set(time.monotonic())  # no more waiting for the database
        taken_ns = time.time_ns()
        for start in range(0, len(leftover), _LEFTOVER_CHUNK):
            if start and time.monotonic() >= closes_at:  # the first chunk in any case
                kept.dropped += len(leftover) - start
                break
            chunk = leftover[start : start + _LEFTOVER_CHUNK]
            try:
                if stuck:  # its connection is in use: straight to disk
                    kept.add(self._delivery.set_aside(chunk, taken_ns))
                else:
                    kept.add(self._delivery.deliver(chunk, taken_ns))
            except BaseException as exc:
                self._unexpected(exc)
                kept.dropped += len(chunk)
        # With no time left the backlog holds nothing back; should it, nothing goes uncounted.
        kept.dropped += len(self._backlog.take_held())
        return kept

    def stats(self) -> dict[str, int]:
        """Counters: see ``LlamaLogger.stats()`` for their meaning."""
        return self._intake.stats()

    # --- writer thread -----------------------------------------------------------

    def _start_thread(self) -> None:
        # When the backlog wants its next step: at once for files left from before.
        self._replay_due_at = 0.0 if self._backlog.spilling else float("inf")
        self._thread = threading.Thread(target=self._run, name="llamalogger-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._intake.serve()
        while True:
            try:
                if self._step():
                    return
            except BaseException as exc:
                self._unexpected(exc)
                time.sleep(self._flush_interval)  # not a hot loop if it keeps happening

    def _step(self) -> bool:
        """One round: replay if due, write what is queued; True once closing is done."""
        intake = self._intake
        # While spilling, wake for the next replay, but no sooner: fewer, bigger spill
        # files are faster to write (one fsync each) and to replay (one commit each).
        intake.wait(min(self._flush_interval, self._replay_due_at - time.monotonic()))
        self._step_backlog()
        while self._takes_batch() and (batch := self._held or intake.take()):
            if not self._write_batch(batch):
                return True  # close() has counted this batch already
            if self._held:
                break  # until the disk's next try
            self._step_backlog()
        if intake.closing:
            self._step_backlog(final=True)
            return True
        return False

    def _write_batch(self, batch: Sequence[Record]) -> bool:
        """Deliver ``batch`` and settle it, but for what the disk refused: that stays in
        hand (``_held``), unsettled. False if close() has counted the batch already."""
        try:
            outcome = self._deliver(batch)
        except BaseException as exc:
            self._unexpected(exc)
            outcome = Outcome(dropped=len(batch))
            self._backlog.take_held()  # counted as dropped with the rest
        self._held = self._backlog.take_held()
        settled = len(batch) - len(self._held)
        if not settled:  # all refused again: its retries are counted, nothing has moved
            self._intake.record(outcome)
            return True
        outcome.batches += not self._held
        return self._intake.settle(settled, outcome)

    def _takes_batch(self) -> bool:
        intake = self._intake
        queued = intake.depth + len(self._held)
        return self._backlog.takes_batch(queued, self._batch_size, asked=intake.asked)

    def _deliver(self, batch: Sequence[Record]) -> Outcome:
        if self._deadline.passed() and self._backlog.enabled:
            # close() has no time left for the database: no new write, straight to disk.
            return self._delivery.set_aside(batch, time.time_ns())
        return self._delivery.deliver(batch, time.time_ns())

    def _step_backlog(self, *, final: bool = False) -> None:
        outcome, self._replay_due_at = self._backlog.step(final=final)
        self._intake.record(outcome)

    def _unexpected(self, exc: BaseException) -> None:
        self._intake.record(Outcome(errors=1))
        self._reporter.report(
            ("unexpected", type(exc)),
            logging.ERROR,
            "llamalogger's writer met an unexpected %s and goes on; the events it was "
            "handling are counted in stats()['dropped']. This is a bug in llamalogger: "
            "please report it",
            type(exc).__name__,
            exc_info=True,
        )

    # --- process life ------------------------------------------------------------

    def after_fork_in_child(self) -> None:
        # The parent's queued records belong to the parent's writer: writing them here
        # too would store them twice. The child starts empty with a connection of its own.
        self._intake.reset()
        self._held = []
        self._outage.forget()
        self._backlog.after_fork_in_child()
        self._sink.after_fork_in_child()
        if not self._intake.closing:
            self._start_thread()
