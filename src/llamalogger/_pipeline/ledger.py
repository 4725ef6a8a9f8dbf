"""The writer's counters, in one place, and the accounting identity they keep:

    enqueued == written + rejected + dropped + on_disk + queued

Records are counted, whatever their kind: events and job records alike (``jobs`` says how
many of them were job records).

Every part of the pipeline says what became of some events as an ``Outcome``; the ledger
adds outcomes up and answers ``stats()`` from one ``snapshot()``. A new counter is one new
field of ``Outcome``: ``apply`` and ``snapshot`` go over the fields.

The ledger has no lock of its own: the writer calls it under the lock that also guards
its queue, so that a snapshot and the queue's length are read at one moment.
"""

from __future__ import annotations

import attrs

__all__ = ["Ledger", "Outcome"]


@attrs.define
class Outcome:
    """What became of some events: each count is a change to the ledger's counters, and
    ``stats()`` shows each field under its name."""

    written: int = 0
    rejected: int = 0
    dropped: int = 0
    on_disk: int = 0  # negative when this writer's spilled events are settled
    retried: int = 0
    sanitised: int = 0
    batches: int = 0
    spilled: int = 0  # put on disk by this writer, ever
    replayed: int = 0  # rows written from spill files, this writer's or anyone's
    errors: int = 0  # unexpected errors the writer survived

    def add(self, other: Outcome) -> None:
        """Count ``other`` in this one too."""
        for name in _FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


_FIELDS = tuple(field.name for field in attrs.fields(Outcome))


class Ledger:
    """Counts every event from the logging call to its final place."""

    __slots__ = ("_in_flight", "_jobs", "_refused", "_settled", "_taken", "_totals")

    def __init__(self) -> None:
        self._totals = dict.fromkeys(_FIELDS, 0)
        self._jobs = 0  # job records among the taken and the refused
        self._taken = 0  # events moved from the queue into a batch
        self._settled = 0  # of those: written, rejected, dropped or on disk
        self._in_flight = 0  # taken, not settled: the batch the writer is working on
        self._refused = 0  # dropped before reaching the queue

    def refuse(self, *, job: bool = False) -> None:
        """An event (``job``: a job record) dropped at the logging call, before it reached
        the queue."""
        self._refused += 1
        self._jobs += job
        self._totals["dropped"] += 1

    def take(self, count: int, jobs: int = 0) -> None:
        """``count`` events left the queue for a batch, ``jobs`` of them job records."""
        self._taken += count
        self._jobs += jobs
        self._in_flight += count

    def settle(self, count: int, outcome: Outcome) -> None:
        """``count`` taken events have a final place, as ``outcome`` says."""
        self.apply(outcome)
        self._in_flight -= count
        self._settled += count

    def apply(self, outcome: Outcome) -> None:
        """Add ``outcome`` to the counters; it settles no taken event (a replay moves
        events from ``on_disk`` to ``written``, an error is only counted)."""
        totals = self._totals
        for name in _FIELDS:
            totals[name] += getattr(outcome, name)

    def flush_mark(self, queue_depth: int) -> int:
        """A mark for ``flushed``: every event logged so far, ``queue_depth`` still queued."""
        return self._taken + queue_depth

    def flushed(self, mark: int) -> bool:
        """Whether every event up to ``mark`` has its final place."""
        return self._settled >= mark

    @property
    def in_flight(self) -> int:
        """Taken, not settled: the batch the writer is working on."""
        return self._in_flight

    @property
    def dropped(self) -> int:
        return self._totals["dropped"]

    @property
    def on_disk(self) -> int:
        return self._totals["on_disk"]

    def snapshot(self, queue_depth: int) -> dict[str, int]:
        """The counters of ``LlamaLogger.stats()``, with ``queue_depth`` events queued."""
        # Job records are told apart when the writer takes them: those still queued are not
        # yet in "jobs" (counting them at the call would cost every event a step).
        counts = {"enqueued": self._taken + queue_depth + self._refused}
        for name, value in self._totals.items():
            counts[name] = value
            if name == "on_disk":  # where docs/api.md lists them
                counts["queued"] = queue_depth + self._in_flight
                counts["queue_depth"] = queue_depth
        counts["jobs"] = self._jobs
        return counts
