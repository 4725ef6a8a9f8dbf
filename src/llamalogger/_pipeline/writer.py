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

# What close() keeps of its timeout (half of it at most) to cancel a write still in
# progress and put what is left on disk: a full queue of 100,000 events takes 3-4 s to
# write to disk on a loaded 2-core machine. Without a spill directory only the cancel.
_SPILL_RESERVE = 5.0
_CANCEL_RESERVE = 1.0
_CANCEL_AGAIN = 0.1
# After close()'s timeout, how long a writer may show no progress before it is taken for
# stuck in a write: longer than putting one batch on disk takes on a loaded machine.
_STILL_AFTER_TIMEOUT = 1.5


class Writer:
    """Queues records and writes them in batches from one background thread."""

    def __init__(self, sink: Sink, settings: Settings, spill: SpillDir | None) -> None:
        """Start writing to ``sink``, keeping batches in ``spill`` during outages (none:
        in memory only). ``open_writer`` builds one from ``Settings`` alone."""
        self._sink = sink
        self._flush_interval = settings.flush_interval
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

        With the database unreachable, events go to the spill directory (if any), and
        retrying stops after ``timeout`` seconds (default ``exit_timeout``). Returns
        ``True`` when nothing was lost; what was lost is counted in ``dropped`` and
        reported, what waits on disk is reported too.
        """
        if timeout is None:
            timeout = self.exit_timeout
        if self._intake.closing:  # twice: the same answer
            return self._close_result
        # Set before closing begins, so that the writer thread never sees one without it.
        self._deadline.set(time.monotonic() + timeout)
        dropped_before = self._intake.close()
        if dropped_before is None:  # another thread's close() came first
            return self._close_result
        stuck = self._stop_thread(timeout)
        leftover, abandoned = self._intake.drain(stuck=stuck)
        kept = self._deliver_leftover(leftover, stuck)
        final = self._intake.finish(len(leftover), kept, abandoned)
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

    def _stop_thread(self, timeout: float) -> bool:
        """Let the writer finish within ``timeout``; True if it is stuck in a write.

        A write still going on near the end (a slow server, or one that never answers)
        is cancelled with time to spare, so that what is left goes to disk (when there is
        a spill directory) and close() ends within ``timeout``: half of it is kept for
        that, 5 s at most (without a spill directory, a quarter, 1 s at most)."""
        self._intake.wake()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return False
        ends = time.monotonic() + timeout
        if self._backlog.enabled:
            reserve = min(_SPILL_RESERVE, timeout / 2)
        else:
            reserve = min(_CANCEL_RESERVE, timeout / 4)
        thread.join(timeout - reserve)
        if thread.is_alive():
            self._deadline.set(time.monotonic())  # no new write: the rest goes to disk
            # Again until it ends: a cancel that came between two writes cancels nothing.
            while thread.is_alive() and (left := ends - time.monotonic()) > 0:
                self._sink.cancel(timeout=min(reserve / 2, left))
                thread.join(min(_CANCEL_AGAIN, max(0.0, ends - time.monotonic())))
        # Past the time, a writer still putting batches on disk (a loaded machine) is let
        # finish while it moves: giving up on it would count events lost that are not.
        seen = self._intake.progress()
        while thread.is_alive():
            thread.join(_STILL_AFTER_TIMEOUT)
            if (now_seen := self._intake.progress()) == seen:
                break
            seen = now_seen
        return thread.is_alive()

    def _deliver_leftover(self, leftover: Sequence[Record], stuck: bool) -> Outcome:
        """Events logged while the writer finished: one attempt, else to disk."""
        if not leftover:
            return Outcome()
        self._deadline.set(time.monotonic())  # no more waiting for the database
        if stuck:  # its connection is in use: straight to disk
            return self._delivery.set_aside(leftover, time.time_ns())
        try:
            return self._delivery.deliver(leftover, time.time_ns())
        except BaseException as exc:
            self._unexpected(exc)
            return Outcome(dropped=len(leftover))

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
        while batch := intake.take():
            try:
                outcome = self._deliver(batch)
            except BaseException as exc:
                self._unexpected(exc)
                outcome = Outcome(dropped=len(batch))
            outcome.batches += 1
            if not intake.settle(len(batch), outcome):
                return True  # close() has counted this batch already
            self._step_backlog()
        if intake.closing:
            self._step_backlog(final=True)
            return True
        return False

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
        self._outage.forget()
        self._backlog.after_fork_in_child()
        self._sink.after_fork_in_child()
        if not self._intake.closing:
            self._start_thread()
