"""The bounded queue between the logging calls and the writer thread.

Callers only append to a deque (``put_apart``, the hot path); when it is full they wait
for room while the writer makes progress, or drop as the policy says. The writer takes
events off in batches and settles them in the ``Ledger``, all under one lock, so that
``flush()`` knows exactly which events were logged before it and ``stats()`` always adds
up.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import countOf, itemgetter
from typing import Any, overload

from .._records import JOB, Record
from .diagnostics import Reporter
from .ledger import Ledger, Outcome
from .settings import Settings

__all__ = ["Details", "Intake"]

Details = Mapping[str, Any]


_category = itemgetter(1)  # an event's category, or JOB for a job record

# How often a caller waiting for room looks at the writer's progress: a few times within
# the hang interval (half of block_timeout), however block_timeout is set.
_LOOK_AGAIN = 0.05


class _Batch(Sequence[Record]):
    """Events taken off the queue, still apart (see ``Intake.put_apart``): each record is
    put together only when it is read, and let go at once by whatever reads it.

    ``jobs`` is how many of them are job records: counted once here, where it costs one
    pass in C over the batch, so that the sink knows whether it needs a transaction and
    ``stats()`` can count them without a step on the callers' path."""

    __slots__ = ("_details", "_fields", "jobs")

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
        self.jobs = countOf(map(_category, fields), JOB)

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


class Intake:
    """Where callers put events and the writer takes them, counted in one ``Ledger``."""

    def __init__(
        self,
        settings: Settings,
        reporter: Reporter,
        cancel_write: Callable[[], None] | None,
        progress: Callable[[], int],
    ) -> None:
        """``cancel_write``: cancels a write that made no progress for half of
        ``block_timeout``, so that its batch can go to disk and make room (None: no spill
        directory, so cancelling would not help). ``progress``: the sink's number that
        changes while its write moves (``Sink.progress``); it must never wait."""
        self._maxsize = settings.queue_size
        self._batch_size = settings.batch_size
        self._block = settings.on_full == "block"
        self._block_timeout = settings.block_timeout
        self._reporter = reporter
        self._cancel_write = cancel_write
        self._sink_progress = progress
        self._closing = False
        # The queue holds each event as two items, its fields and its details (see
        # put_apart), so its length is twice the events it holds.
        self._room = 2 * self._maxsize  # 0 once closing: every put takes the slow path
        # Below this length a put only appends: there is room, and no batch to wake for.
        self._append_below = 2 * min(self._batch_size - 1, self._maxsize)
        self.reset()

    def reset(self) -> None:
        """Empty, with new counters: a forked child's start (the parent's events are the
        parent's to write)."""
        self._queue: collections.deque[Any] = collections.deque()  # fields, details, ...
        self._wake = threading.Event()
        # Guards the ledger, the hand-over of events from queue to batch (so that flush()
        # can tell exactly which events were logged before it), and is what callers wait
        # on for room in a full queue.
        self._lock = threading.Condition(threading.Lock())
        self._ledger = Ledger()
        # Grows whenever the writer takes, settles or replays events: with the sink's own
        # progress, how callers waiting for room tell a slow writer from a stuck one.
        self._moves = 0
        # Set when a caller waited block_timeout for room in vain; until the writer takes
        # its next batch, callers drop at once instead of each waiting that long again.
        self._stuck = False
        self._abandoned = False  # close() gave up on a write that never returned
        self._writer_ident: int | None = None
        self._flushes = 0  # flush() calls waiting: the writer does not let events gather

    @property
    def closing(self) -> bool:
        return self._closing

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
            self._refuse("the logger is closed", event)
            return
        if threading.get_ident() == self._writer_ident:
            # The writer's own thread (psycopg logging through a handler of ours) must never
            # wait for itself: the queue may pass its bound by these few records.
            self._queue.extend(event)
            return
        if not self._block:
            self._refuse(f"the queue is full ({self._maxsize} events) and on_full='drop'", event)
            return
        if not self._wait_for_room(event):
            self._refuse(
                "the logger is closed"
                if self._closing
                else "the queue is full and the writer made no progress for block_timeout "
                f"({self._block_timeout:.1f}s)",
                event,
            )

    def _wait_for_room(self, event: tuple[tuple[object, ...], Details | None]) -> bool:
        """Queue ``event`` once the writer makes room. While events move (rows reach the
        server or the disk), however slowly, this waits: a flood is slowed to their pace.
        False once nothing moved for ``block_timeout`` (or the logger is closing)."""
        with self._lock:
            if self._stuck:
                return False
            self._wake.set()
            seen = self._progress()
            still_since = time.monotonic()
            may_cancel = self._cancel_write is not None
            while len(self._queue) >= self._room and not self._closing:
                now = time.monotonic()
                progress = self._progress()
                if progress != seen:  # a slow write is no hanging one
                    seen, still_since = progress, now
                    may_cancel = self._cancel_write is not None
                still = now - still_since
                if still >= self._block_timeout:
                    self._stuck = True
                    return False
                if may_cancel and still >= self._block_timeout / 2:
                    # Hung (a lock, a stalled network): its batch goes to disk instead.
                    may_cancel = False
                    threading.Thread(target=self._cancel_write, daemon=True).start()
                # Woken when the writer takes or settles a batch; between those, only the
                # sink's progress says that a write moves, so look at it again soon.
                self._lock.wait(_LOOK_AGAIN)
            if self._closing:
                return False
            self._queue.extend(event)
            return True

    def _progress(self) -> int:
        """Changes whenever events move: taken, settled, replayed, or rows of a write
        reaching the server (called under the lock: the sink's number never waits)."""
        return self._moves + self._sink_progress()

    def _refuse(self, reason: str, event: tuple[tuple[object, ...], Details | None]) -> None:
        """Count a dropped event; report the reason once (never under the lock: a slow
        logging handler must not hold up the writer)."""
        job = _category(event[0]) == JOB
        with self._lock:
            self._ledger.refuse(job=job)
        self._reporter.once(
            ("refused", reason),
            logging.WARNING,
            "llamalogger dropped an event because %s; further drops are only counted in "
            "stats()['dropped']",
            reason,
        )

    def progress(self) -> int:
        """A number that changes whenever events move (see ``_wait_for_room``)."""
        with self._lock:
            return self._progress()

    def flush(self, timeout: float | None) -> bool:
        """Wait until every event queued before this call has its final place."""
        with self._lock:
            ledger = self._ledger
            mark = ledger.flush_mark(len(self._queue) // 2)
            self._flushes += 1
            self._wake.set()
            try:
                return self._lock.wait_for(lambda: ledger.flushed(mark), timeout)
            finally:
                self._flushes -= 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return self._ledger.snapshot(len(self._queue) // 2)

    # --- writer side -------------------------------------------------------------

    def serve(self) -> None:
        """Called on the writer thread as it starts: its own puts never wait."""
        self._writer_ident = threading.get_ident()

    def wake(self) -> None:
        self._wake.set()

    def wait(self, timeout: float) -> None:
        """Until a batch is queued, a flush or close asks, or ``timeout`` seconds pass."""
        self._wake.wait(max(timeout, 0.0))
        self._wake.clear()

    @property
    def depth(self) -> int:
        """Events in the queue."""
        return len(self._queue) // 2

    @property
    def asked(self) -> bool:
        """Whether flush() or close() waits for the queued events."""
        return self._closing or self._flushes > 0

    def take(self) -> _Batch:
        """Up to ``batch_size`` events off the queue, in order."""
        queue = self._queue
        with self._lock:
            count = min(len(queue) // 2, self._batch_size)
            batch = _Batch(queue, count)
            self._ledger.take(count, batch.jobs)
            if count:
                self._moves += 1
                self._stuck = False
                self._lock.notify_all()  # room for callers waiting in a full queue
        return batch

    def settle(self, count: int, outcome: Outcome) -> bool:
        """``count`` taken events have their final place, as ``outcome`` says; False
        (nothing counted) if ``close()`` has counted them already, as lost."""
        with self._lock:
            if self._abandoned:
                return False
            self._settle(count, outcome)
            return True

    def record(self, outcome: Outcome) -> None:
        """Count what settles no taken event: a replay, an error."""
        with self._lock:
            self._ledger.apply(outcome)
            if outcome.replayed or outcome.written or outcome.on_disk or outcome.rejected:
                self._moves += 1  # a replay stored something (failed attempts move nothing)

    def _settle(self, count: int, outcome: Outcome) -> None:
        self._ledger.settle(count, outcome)
        self._moves += 1
        self._lock.notify_all()

    # --- closing -------------------------------------------------------------------

    def close(self) -> int | None:
        """Take no more events; callers waiting for room give up now. Returns the events
        dropped so far (what close() loses is counted from here), None if closing had
        begun already."""
        with self._lock:
            if self._closing:
                return None
            self._closing = True
            self._room = self._append_below = 0
            self._lock.notify_all()
            return self._ledger.dropped

    def drain(self, *, stuck: bool) -> tuple[_Batch, int]:
        """Take what is left in the queue; with ``stuck`` (a write that never returned),
        also give up on the batch in flight: returns how many events it holds."""
        with self._lock:
            abandoned = self._ledger.in_flight if stuck else 0
            leftover = _Batch(self._queue, len(self._queue) // 2)
            self._ledger.take(len(leftover), leftover.jobs)
            if stuck:
                # Its batch may or may not be committed when (if) the write returns; the
                # writer will not count it then, so it is counted here, once, as lost.
                self._abandoned = True
        return leftover, abandoned

    def finish(self, leftover: int, kept: Outcome, abandoned: int) -> dict[str, int]:
        """Settle the drained events and the abandoned batch; the final counters."""
        with self._lock:
            self._settle(leftover, kept)
            self._settle(abandoned, Outcome(dropped=abandoned))
            return self._ledger.snapshot(len(self._queue) // 2)
