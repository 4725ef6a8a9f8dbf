"""The background writer: a bounded queue, one daemon thread, batches, flush and close.

Caller threads only append to a deque; the writer thread takes batches from it, hands
each to ``Delivery`` and steps the ``Backlog`` (spill files and their replay) with one
call. The ``Ledger`` changes under the writer's one lock, in steps that keep its identity
true at every moment, so ``stats()`` is a cheap read that always adds up.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

from .._records import Record
from . import process
from .backlog import Backlog
from .delivery import Delivery
from .diagnostics import Reporter, diagnostics
from .ledger import Ledger, Outcome
from .retry import Deadline, Outage
from .settings import Settings
from .sink import Sink
from .spill import SpillDir

__all__ = ["Writer"]

Details = Mapping[str, Any]


class _Batch(Sequence[Record]):
    """Events taken off the queue, still apart (see ``Writer.put_apart``): each record is
    put together only when it is read, and let go at once by whatever reads it."""

    __slots__ = ("_details", "_fields")

    def __init__(self, queue: collections.deque[Any], count: int) -> None:
        """Take ``count`` events off ``queue``."""
        fields: list[tuple[object, ...]] = []
        details: list[Details | None] = []
        popleft = queue.popleft
        for _ in range(count):
            fields.append(popleft())
            details.append(popleft())
        self._fields = fields
        self._details = details

    def __len__(self) -> int:
        return len(self._fields)

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            pairs = zip(self._fields[index], self._details[index], strict=True)
            return [(*fields, details) for fields, details in pairs]  # type: ignore[misc]
        return (*self._fields[index], self._details[index])  # type: ignore[return-value]

    def __iter__(self) -> Iterator[Record]:
        for fields, details in zip(self._fields, self._details, strict=True):
            yield (*fields, details)  # type: ignore[misc]


class Writer:
    """Queues records and writes them in batches from one background thread."""

    def __init__(self, sink: Sink, settings: Settings, spill: SpillDir | None) -> None:
        """Start writing to ``sink``, keeping batches in ``spill`` during outages (none:
        in memory only). ``open_writer`` builds one from ``Settings`` alone."""
        self._sink = sink
        self._maxsize = settings.queue_size
        self._batch_size = settings.batch_size
        self._flush_interval = settings.flush_interval
        self._block = settings.on_full == "block"
        self._block_timeout = settings.block_timeout
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
        # Half way through block_timeout a hanging write is cancelled, so that its batch
        # can go to disk and make room; without a spill directory that would not help.
        self._cancel_half_way = spill is not None
        self._reset_state()
        self._closing = False
        # The queue holds each event as two items, its fields and its details (see
        # put_apart), so its length is twice the events it holds.
        self._room = 2 * self._maxsize  # 0 once closing: every put takes the slow path
        # Below this length a put only appends: there is room, and no batch to wake for.
        self._append_below = 2 * min(self._batch_size - 1, self._maxsize)
        self._closed = False
        self._close_result = True
        self._thread: threading.Thread | None = None
        self._start_thread()
        process.register(self)

    def _reset_state(self) -> None:
        self._queue: collections.deque[Any] = collections.deque()  # fields, details, ...
        self._wake = threading.Event()
        # Guards the counters, the hand-over of records from queue to batch (so that
        # flush() can tell exactly which records were logged before it), and is what
        # callers wait on for room in a full queue.
        self._lock = threading.Condition(threading.Lock())
        self._ledger = Ledger()
        # Set when a caller waited block_timeout for room in vain; until the writer takes
        # its next batch, callers drop at once instead of each waiting that long again.
        self._stuck = False
        self._abandoned = False  # close() gave up on a write that never returned
        self._writer_ident: int | None = None

    # --- caller side -------------------------------------------------------------

    def put_apart(self, fields: tuple[object, ...], details: Details | None) -> None:
        """Queue an event given as its first twelve fields and its details, which stay
        apart until the writer takes them.

        A tuple that holds a dict is watched by the garbage collector for as long as it
        lives, and queued events live long enough to reach its oldest generation, where
        they bring on full collections that the logging calls pay for. The fields alone
        are plain values the collector stops watching at its first pass, and a details
        dict of plain values is never watched. One ``extend`` of a tuple queues both at
        once: it runs no Python code between them, so other threads' events never come
        in between.
        """
        queue = self._queue
        if len(queue) < self._append_below:  # the hot path: one comparison, one extend
            queue.extend((fields, details))
            return
        if len(queue) >= self._room:  # full, or closing (then there is no room at all)
            self._put_when_full((fields, details))
            return
        queue.extend((fields, details))
        if len(queue) >= 2 * self._batch_size and not self._wake.is_set():
            self._wake.set()

    def _put_when_full(self, event: tuple[tuple[object, ...], Details | None]) -> None:
        if self._closing:
            self._refuse("the logger is closed")
            return
        if threading.get_ident() == self._writer_ident:
            # The writer's own thread (psycopg logging through a handler of ours) must never
            # wait for itself: the queue may pass its bound by these few records.
            self._queue.extend(event)
            return
        if not self._block:
            self._refuse(f"the queue is full ({self._maxsize} events) and on_full='drop'")
            return
        if not self._wait_for_room(event):
            self._refuse(
                "the logger is closed"
                if self._closing
                else "the queue is full and the writer made no progress for block_timeout "
                f"({self._block_timeout:.1f}s)"
            )

    def _wait_for_room(self, event: tuple[tuple[object, ...], Details | None]) -> bool:
        """Queue ``event`` once the writer makes room; False if it made none within
        ``block_timeout`` (or the logger is closing)."""
        with self._lock:
            if self._stuck:
                return False
            self._wake.set()
            now = time.monotonic()
            deadline = now + self._block_timeout
            # Half way, a write that hangs (a COPY waiting on a lock) is cancelled, so that
            # the writer can put its batch on disk and make room.
            cancel_at = now + self._block_timeout / 2 if self._cancel_half_way else deadline
            while len(self._queue) >= self._room and not self._closing:
                now = time.monotonic()
                if now >= deadline:
                    self._stuck = True
                    return False
                if now >= cancel_at:
                    cancel_at = deadline
                    threading.Thread(target=self._sink.cancel, daemon=True).start()
                self._lock.wait(min(cancel_at, deadline) - now)
            if self._closing:
                return False
            self._queue.extend(event)
            return True

    def _refuse(self, reason: str) -> None:
        """Count a dropped event; report the reason once (never under the lock: a slow
        logging handler must not hold up the writer)."""
        with self._lock:
            self._ledger.refuse()
        self._reporter.once(
            ("refused", reason),
            logging.WARNING,
            "llamalogger dropped an event because %s; further drops are only counted in "
            "stats()['dropped']",
            reason,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued before this call is written, on disk for replay,
        or dead-lettered. ``False`` if that did not happen within ``timeout`` seconds."""
        with self._lock:
            ledger = self._ledger
            mark = ledger.flush_mark(len(self._queue) // 2)
            self._wake.set()
            return self._lock.wait_for(lambda: ledger.flushed(mark), timeout)

    def flush_at_job_end(self) -> None:
        """The end of a forked child's outermost job: deliver or spill, never wait long on
        an unreachable database, and say what is left undelivered."""
        if self.flush(self._block_timeout):
            return
        self._sink.cancel()  # a write that hangs: let the writer put its batch on disk
        if self.flush(self.exit_timeout):
            return
        queued = self.stats()["queued"]
        diagnostics.error(
            "llamalogger: a process's outermost job ended with %d events not delivered after "
            "%.1fs (database unreachable and no spill directory, or a write hanging); a "
            "process that ends now without close() loses them",
            queued,
            self._block_timeout + self.exit_timeout,
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
        with self._lock:
            if self._closed or self._closing:
                return self._close_result
            self._closing = True
            self._room = self._append_below = 0
            dropped_before = self._ledger.dropped
            self._deadline.set(time.monotonic() + timeout)
            self._lock.notify_all()  # callers waiting for room give up now
        stuck = self._stop_thread(timeout)
        with self._lock:
            leftover = _Batch(self._queue, len(self._queue) // 2)
            abandoned = self._ledger.in_flight if stuck else 0  # the stuck write's batch
            self._ledger.take(len(leftover))
            if stuck:
                # Its batch may or may not be committed when (if) the write returns; the
                # writer will not count it then, so it is counted here, once, as lost.
                self._abandoned = True
        kept = self._deliver_leftover(leftover, stuck)
        with self._lock:
            self._settle(len(leftover), kept)
            self._settle(abandoned, Outcome(dropped=abandoned))
            lost = self._ledger.dropped - dropped_before
            self._closed = True
            self._close_result = lost == 0
            on_disk = self._ledger.on_disk
        if lost:
            diagnostics.error(
                "llamalogger closed with %d events not written within the %.1fs close() waits "
                "(database unreachable without a spill directory, or a write that never "
                "returned); they are counted in stats()['dropped']",
                lost,
                timeout,
            )
        self._backlog.report_left(on_disk)
        if not stuck:  # a connection in use by a stuck thread must not be closed under it
            self._sink.close()
        process.unregister(self)
        return self._close_result

    def _stop_thread(self, timeout: float) -> bool:
        """Let the writer finish within ``timeout``; True if it is stuck in a write."""
        self._wake.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return False
        thread.join(timeout)
        if thread.is_alive():  # in a write that does not return: a lock, a stalled network
            self._sink.cancel(timeout=1.0)
            thread.join(1.0)
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
        with self._lock:
            return self._ledger.snapshot(len(self._queue) // 2)

    # --- writer thread -----------------------------------------------------------

    def _start_thread(self) -> None:
        # When the backlog wants its next step: at once for files left from before.
        self._replay_due_at = 0.0 if self._backlog.spilling else float("inf")
        self._thread = threading.Thread(target=self._run, name="llamalogger-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._writer_ident = threading.get_ident()
        while True:
            try:
                if self._step():
                    return
            except BaseException as exc:
                self._unexpected(exc)
                time.sleep(self._flush_interval)  # not a hot loop if it keeps happening

    def _step(self) -> bool:
        """One round: replay if due, write what is queued; True once closing is done."""
        # While spilling, wake for the next replay, but no sooner: fewer, bigger spill
        # files are faster to write (one fsync each) and to replay (one commit each).
        timeout = min(self._flush_interval, self._replay_due_at - time.monotonic())
        self._wake.wait(max(timeout, 0.0))
        self._wake.clear()
        self._step_backlog()
        while batch := self._take_batch():
            try:
                outcome = self._delivery.deliver(batch, time.time_ns())
            except BaseException as exc:
                self._unexpected(exc)
                outcome = Outcome(dropped=len(batch))
            outcome.batches += 1
            with self._lock:
                if self._abandoned:
                    return True  # close() has counted this batch already
                self._settle(len(batch), outcome)
            self._step_backlog()
        if self._closing:
            self._step_backlog(final=True)
            return True
        return False

    def _step_backlog(self, *, final: bool = False) -> None:
        outcome, self._replay_due_at = self._backlog.step(final=final)
        with self._lock:
            self._ledger.apply(outcome)

    def _take_batch(self) -> _Batch:
        queue = self._queue
        with self._lock:
            count = min(len(queue) // 2, self._batch_size)
            batch = _Batch(queue, count)
            self._ledger.take(count)
            if count:
                self._stuck = False
                self._lock.notify_all()  # room for callers waiting in a full queue
        return batch

    def _settle(self, count: int, outcome: Outcome) -> None:
        """``count`` taken records have their final place; the caller holds the lock."""
        self._ledger.settle(count, outcome)
        self._lock.notify_all()

    def _unexpected(self, exc: BaseException) -> None:
        with self._lock:
            self._ledger.apply(Outcome(errors=1))
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
        self._reset_state()
        self._outage.forget()
        self._backlog.after_fork_in_child()
        self._sink.after_fork_in_child()
        if not self._closing:
            self._start_thread()
