"""The backlog: batches kept in spill files while the database is unreachable, and their
replay, oldest first and exactly once, when it is back.

While spilling, every batch goes to a spill file behind the older ones, so that the order
of events survives the outage. Files that other processes left (a forked child, a crash)
are found by a scan every few seconds and replayed the same way. The writer steps the
backlog with one call, ``step()``, which replays what is due and says when the next step
is; delivery hands it the batches the database did not take (``keep``).

A spill file that cannot be written (a full, read-only or failing disk) leaves its batch
in memory: ``take_held`` hands it back to the writer, which keeps it, unsettled, and
delivers it again before anything queued, once ``takes_batch`` says the next attempt is
due (the backoff of ``retry``); it takes no other batch meanwhile. While spilling, the
writer gathers events for a while before it takes a batch (``takes_batch``), so that
files hold thousands of events.

Runs on the writer thread only.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from .._records import Record
from .diagnostics import Reporter, diagnostics
from .ledger import Outcome
from .retry import FIRST_RETRY_DELAY, MAX_RETRY_DELAY, Deadline, Outage, failure
from .sanitise import clean
from .sink import Failure, Sink, explain
from .spill import SpillDir, SpillFile, SpillFull, SpillRows, SpillUnreadable

__all__ = ["Backlog"]

# How often a writer that is not spilling looks for files other processes left: one
# directory listing, so that a forked child's spill files do not wait for a restart.
_SCAN_INTERVAL = 2.0
# The longest the writer replays spill files before it looks at its queue again.
_REPLAY_SLICE = 0.25
# While spilling, the longest the writer lets events gather in its queue before it puts
# them in a file (unless a batch is full or flush() asks): one file, one fsync and, later,
# one replay per second of a trickle, instead of one per handful of events. A crash loses
# what is queued either way.
_GATHER_INTERVAL = 1.0
# A file a full disk refuses is halved until it fits, down to this many events: a disk
# with less room than that is full.
_SMALLEST_PART = 1000
_FULL = (errno.ENOSPC, errno.EDQUOT)

# The rows a replay writes in one transaction, at least (a file is never split): a live
# batch's worth, so that a backlog of small files pays a commit per batch, not per file.
_REPLAY_ROWS = 20_000


class _Opened(NamedTuple):
    """A claimed spill file and its rows, parsed as its replay's COPY takes them."""

    file: SpillFile
    rows: SpillRows


class Backlog:
    """Owns the spill directory of one writer: what goes to disk, what is replayed, when."""

    def __init__(
        self,
        sink: Sink,
        spill: SpillDir | None,
        reporter: Reporter,
        outage: Outage,
        deadline: Deadline,
    ) -> None:
        self._sink = sink
        self._spill = spill
        self._reporter = reporter
        self._outage = outage
        self._deadline = deadline
        self._reset()

    def _reset(self) -> None:
        # Spilling from the start if files wait: this writer's events go behind them.
        self._spilling = bool(self._pending())
        self._next_replay = 0.0
        self._next_scan = 0.0
        self._replay_delay = FIRST_RETRY_DELAY
        self._warned = False
        self._own_files: dict[str, int] = {}  # this writer's files not yet settled: events
        self._last_file_at = 0.0  # when this writer last wrote a spill file (monotonic)
        # A disk that refused a spill file: when to try again, the backoff, and the records
        # kept in memory meanwhile, for the writer to put back in its queue (take_held).
        self._disk_failing = False
        self._disk_retry_at = 0.0
        self._disk_delay = FIRST_RETRY_DELAY
        self._held: list[Record] = []

    @property
    def enabled(self) -> bool:
        """Whether there is a spill directory to keep batches in."""
        return self._spill is not None

    @property
    def spilling(self) -> bool:
        """Whether batches go to disk, behind older ones, instead of to the database."""
        return self._spilling

    # --- the writer's one call -----------------------------------------------------

    def step(self, *, final: bool = False) -> tuple[Outcome, float]:
        """Replay what is due (``final``: everything, until the closing deadline); returns
        what became of the replayed events and when (``time.monotonic()``) the next replay
        is due, infinity when none is."""
        outcome = Outcome()
        if final:
            if self._spilling or self._pending():
                # One attempt, as long as close() allows: it never waits on an unreachable
                # database, and what is left stays on disk for the next logger.
                self._replay(outcome, self._deadline.at)
        elif self._due():
            self._replay(outcome, None)
        due = self._next_replay if self._spilling else float("inf")
        if self._disk_failing and self._disk_retry_at > time.monotonic():
            due = min(due, self._disk_retry_at)  # events kept in memory: the disk's next try
        return outcome, due

    def takes_batch(self, queued: int, batch_size: int, *, asked: bool) -> bool:
        """Whether the writer should take a batch off its queue now, with ``queued`` events
        in it (``asked``: flush() or close() waits for them).

        Not while the disk refuses spill files and the next attempt is not due, unless
        closing (one more attempt): the events wait in the queue, where callers see how
        much room is left. While spilling, once a batch is full, a flush asks, or
        ``_GATHER_INTERVAL`` has passed since the last file.
        """
        now = time.monotonic()
        closing = self._deadline.at is not None
        if self._disk_failing and now < self._disk_retry_at and not closing:
            return False
        if asked or not self._spilling:
            return True
        return queued >= batch_size or now >= self._last_file_at + _GATHER_INTERVAL

    @property
    def holding(self) -> bool:
        """Whether records the disk refused wait to be handed back (``take_held``)."""
        return bool(self._held)

    def take_held(self) -> list[Record]:
        """The records ``keep`` could not put on disk, oldest first: the writer keeps them,
        not settled, and delivers them again first, once ``takes_batch`` says."""
        held, self._held = self._held, []
        return held

    def _due(self) -> bool:
        """Time to replay: while spilling, after the backoff; otherwise every few seconds
        if files wait in the directory (left by another process, a forked child, a crash)."""
        now = time.monotonic()
        if self._spilling:
            return now >= self._next_replay
        if self._spill is None or now < self._next_scan:
            return False
        self._next_scan = now + _SCAN_INTERVAL
        if self._pending():
            self._spilling = True  # keeps this writer's own order behind theirs
            return True
        return False

    # --- to disk -------------------------------------------------------------------

    def keep(
        self,
        records: Sequence[Record],
        taken_ns: int,
        outcome: Outcome,
        *,
        first_pass: bool = False,
    ) -> None:
        """Put ``records`` in a spill file and enter spilling mode. If the disk refuses the
        file, they are held in memory (``take_held``) and the disk is tried again later;
        dropped (counted, reported) if there is no directory, it is full (the cap), or
        closing has no time left for another attempt. ``first_pass``: nothing has looked
        at these records yet, so what cleaning changes is counted here."""
        spill = self._spill
        if spill is None:  # only reached when closing ran out of time
            outcome.dropped += len(records)
            return
        closing = self._deadline.passed()  # no later attempt: this one, or dropped
        if self._disk_failing and time.monotonic() < self._disk_retry_at and not closing:
            self._held.extend(records)
            return
        # Spilled rows are always the cleaned ones: a replay must not be refused.
        rows = []
        changed = []
        for record in records:
            row, was_changed = clean(record)
            rows.append(row)
            changed.append(first_pass and was_changed)
        stored, trouble = self._write_parts(spill, rows, taken_ns)
        if stored:
            outcome.sanitised += sum(changed[:stored])
            outcome.on_disk += stored
            outcome.spilled += stored
            self._last_file_at = time.monotonic()
            if not self._warned:
                self._warned = True
                diagnostics.warning(
                    "llamalogger is keeping events in spill files in %s until the database "
                    "takes writes again",
                    spill.path,
                )
            if not self._spilling:
                self._spilling = True
                self._next_replay = time.monotonic() + self._replay_delay
        rest = records[stored:]
        if trouble is None:
            self._disk_recovered(spill)
        elif isinstance(trouble, SpillFull):
            self._drop(
                rest,
                outcome,
                "llamalogger's spill directory %s reached its cap of %d bytes (spill_max_bytes): "
                "events are dropped and counted in stats()['dropped'] until it drains",
                spill.path,
                spill.max_bytes,
            )
        elif not closing:
            self._disk_failed(spill, trouble)
            self._held.extend(rest)
        else:
            self._drop(
                rest,
                outcome,
                "llamalogger cannot write a spill file in %s while closing (%s): events are "
                "dropped and counted in stats()['dropped']",
                spill.path,
                trouble,
            )

    def _write_parts(
        self, spill: SpillDir, rows: list[tuple[object, ...]], taken_ns: int
    ) -> tuple[int, SpillFull | OSError | None]:
        """Write ``rows`` in as few files as the disk takes: a file that a full disk (or the
        cap) refuses is tried again in halves, down to ``_SMALLEST_PART`` rows, so that a
        disk with less room than a batch still takes what fits. Returns how many rows, from
        the first, are on disk, and what refused the rest."""
        stored = 0
        size = len(rows)
        while stored < len(rows):
            part = rows[stored : stored + size]
            try:
                file = spill.write(part, taken_ns)  # same time, later counter: order kept
            except (SpillFull, OSError) as exc:
                full = isinstance(exc, SpillFull) or exc.errno in _FULL
                if full and size > _SMALLEST_PART:
                    size = (size + 1) // 2
                    continue
                return stored, exc
            self._own_files[file.spill_id] = len(part)
            stored += len(part)
        return stored, None

    def _drop(
        self, records: Sequence[Record], outcome: Outcome, message: str, *args: object
    ) -> None:
        """Lose ``records``: counted in ``dropped``, and the reason reported once."""
        outcome.dropped += len(records)
        self._reporter.once(("spill dropped", message), logging.ERROR, message, *args)

    def _disk_failed(self, spill: SpillDir, exc: OSError) -> None:
        """A spill file could not be written: try again after the backoff; one warning
        per trouble, saying what happens to the events meanwhile."""
        self._disk_retry_at = time.monotonic() + self._disk_delay
        self._disk_delay = min(self._disk_delay * 2, MAX_RETRY_DELAY)
        if self._disk_failing:
            return
        self._disk_failing = True
        diagnostics.warning(
            "llamalogger cannot write a spill file in %s (%s): events are kept in memory, "
            "up to queue_size, while writing a spill file (and the database) is tried again; "
            "only once memory is full too are events dropped, counted in stats()['dropped']",
            spill.path,
            exc,
        )

    def _disk_recovered(self, spill: SpillDir) -> None:
        self._disk_delay = FIRST_RETRY_DELAY
        if self._disk_failing:
            self._disk_failing = False
            diagnostics.warning("llamalogger writes spill files in %s again", spill.path)

    # --- from disk -----------------------------------------------------------------

    def _pending(self) -> list[SpillFile]:
        """The spill files to replay; none (reported) if the directory cannot be listed."""
        if self._spill is None:
            return []
        try:
            return self._spill.pending()
        except OSError as exc:
            self._reporter.report(
                "spill listing",
                logging.ERROR,
                "llamalogger cannot list its spill directory %s: %s",
                self._spill.path,
                exc,
            )
            return []

    def _replay(self, outcome: Outcome, until: float | None) -> None:
        """Write the spill files, oldest first, for one slice of time (or ``until`` that
        moment); leave spilling mode once none is left."""
        spill = self._spill
        if spill is None:
            self._spilling = False
            return
        target = self._sink.target()
        slice_ends = time.monotonic() + _REPLAY_SLICE if until is None else until
        pending = deque(self._pending())
        while pending:
            if time.monotonic() >= slice_ends:
                # A long backlog is written in slices: between them the writer puts new
                # batches on disk (behind the backlog), so the queue never fills meanwhile.
                self._next_replay = time.monotonic()
                return
            group = self._gather(spill, pending, target, outcome)
            if not self._write_group(spill, group, outcome):
                self._replay_delay = min(self._replay_delay * 2, MAX_RETRY_DELAY)
                self._next_replay = time.monotonic() + self._replay_delay
                return
        self._settle_vanished(spill, outcome)
        self._spilling = False
        self._replay_delay = FIRST_RETRY_DELAY
        self._disk_retry_at = 0.0  # events held in memory may go straight to the database
        self._outage.succeeded()
        if self._warned:
            self._warned = False
            diagnostics.warning("llamalogger wrote every spilled event; writing directly again")

    def _gather(
        self,
        spill: SpillDir,
        pending: deque[SpillFile],
        target: dict[str, str],
        outcome: Outcome,
    ) -> list[_Opened]:
        """Claim and open the next files of ``pending`` (taking them off it) until they hold
        a transaction's worth of rows."""
        group: list[_Opened] = []
        rows = 0
        while pending and rows < _REPLAY_ROWS:
            file = pending.popleft()
            if spill.stored(file):  # replayed, kept by a read-only disk: only removing is due
                with contextlib.suppress(OSError):  # reported when it first failed
                    spill.remove(file)
                continue
            try:
                claimed = spill.claim(file)
            except OSError as exc:
                # A read-only disk takes no claim, and exactly once needs none (the replay
                # mark, design.md 5.5): the file is replayed where it is, so that the events
                # kept in memory behind it can follow, and removed once the disk lets us.
                self._disk_trouble("claim", file, exc)
                claimed = file
            if claimed is None:
                continue  # another process took it
            try:
                written_for, file_rows = spill.open(claimed)
            except FileNotFoundError:
                continue  # taken over meanwhile by a process that found us gone: not ours
            except (OSError, SpillUnreadable) as exc:
                if not self._give_up(spill, claimed, "unreadable", exc, outcome):
                    return group  # kept where it is, and tried again later
                continue
            if written_for is not None and written_for != target:
                self._leave_alone(spill, claimed, written_for, target)
                continue
            group.append(_Opened(claimed, file_rows))
            rows += len(file_rows)
        return group

    def _leave_alone(
        self,
        spill: SpillDir,
        file: SpillFile,
        written_for: dict[str, str],
        target: dict[str, str],
    ) -> None:
        """Not ours to write: give the file back for a logger of its own database."""
        spill.leave_alone(file)
        self._reporter.once(
            ("foreign spill", file.spill_id),
            logging.WARNING,
            "llamalogger leaves spill file %s alone: it was written for %s, not %s",
            file.path.name,
            written_for,
            target,
        )

    def _write_group(self, spill: SpillDir, group: list[_Opened], outcome: Outcome) -> bool:
        """Write the files of ``group`` in one transaction (their rows stream into its COPY
        as they are parsed); False, the files given back, if the database is unreachable."""
        while group:
            try:
                stored_before = self._sink.write_replays(
                    [(opened.file.spill_id, opened.rows) for opened in group]
                )
            except SpillUnreadable as exc:
                # A line that is no row, met as the COPY reached it: the transaction is
                # rolled back whole; that file is set aside and the others written again.
                [bad] = [opened for opened in group if opened.file.spill_id == exc.spill_id]
                group.remove(bad)
                if not self._give_up(spill, bad.file, "unreadable", exc, outcome):
                    self._release(spill, group)
                    return False
                continue
            except Exception as exc:
                if failure(exc) is Failure.REJECT:
                    return self._write_refused(spill, group, exc, outcome)
                outcome.retried += 1
                self._outage.failed(exc)
                self._release(spill, group)
                return False
            for opened in group:
                self._written(spill, opened, opened.file.spill_id not in stored_before, outcome)
            return True
        return True

    def _write_refused(
        self, spill: SpillDir, group: list[_Opened], exc: Exception, outcome: Outcome
    ) -> bool:
        """The database refused a row of ``group``: only the file that holds it is set
        aside, found by writing the files one transaction each."""
        if len(group) == 1:
            return self._give_up(spill, group[0].file, "rejected", exc, outcome)
        for index, opened in enumerate(group):
            if not self._write_group(spill, [opened], outcome):
                self._release(spill, group[index + 1 :])
                return False
        return True

    def _written(self, spill: SpillDir, opened: _Opened, inserted: bool, outcome: Outcome) -> None:
        """A file whose rows are stored: remove it and count them."""
        try:
            spill.remove(opened.file)
        except OSError as exc:
            # Its rows are stored, and its id with them: a later replay of it writes
            # nothing twice (llama_log_spill_replays) and removes it then.
            self._disk_trouble("remove", opened.file, exc)
        # Not inserted: an earlier replay of this file had committed already.
        rows = len(opened.rows)
        outcome.replayed += rows if inserted else 0
        self._settle_file(opened.file.spill_id, stored=rows, outcome=outcome)

    def _release(self, spill: SpillDir, group: list[_Opened]) -> None:
        """Give claimed files back, for the next attempt of any logger."""
        for opened in group:
            try:
                spill.release(opened.file)
            except OSError as trouble:  # still ours, under our claim: replayed later
                self._disk_trouble("release", opened.file, trouble)

    def _give_up(
        self, spill: SpillDir, file: SpillFile, why: str, exc: Exception, outcome: Outcome
    ) -> bool:
        """Set aside a file that can never be written (``why``: ``unreadable`` or
        ``rejected``), counting its events; False if the disk kept it where it is."""
        aside = self._set_aside(spill, file, why)
        if aside is None:
            return False
        if why == "rejected":
            diagnostics.error(
                "llamalogger: the database refused spill file %s (%s)", aside, explain(exc)
            )
        else:
            diagnostics.error("llamalogger cannot read spill file %s: %s", aside, exc)
        self._settle_file(file.spill_id, stored=0, outcome=outcome)
        return True

    def _set_aside(self, spill: SpillDir, file: SpillFile, why: str) -> Path | None:
        try:
            return spill.set_aside(file, why)
        except OSError as exc:
            self._disk_trouble(f"set aside as {why}", file, exc)
            return None

    def _disk_trouble(self, what: str, file: SpillFile, exc: OSError) -> None:
        """An operating-system error on a spill file: the disk's trouble, not a bug in the
        writer. Reported (at most once a minute); the file stays and is tried again."""
        self._reporter.report(
            ("spill file", what),
            logging.ERROR,
            "llamalogger cannot %s spill file %s (%s); it stays on disk and is tried again",
            what,
            file.path,
            exc,
        )

    def _settle_file(self, spill_id: str, *, stored: int, outcome: Outcome) -> None:
        events = self._own_files.pop(spill_id, None)
        if events is None:
            return  # another writer's file: it is not in this writer's counters
        outcome.on_disk -= events
        if stored:
            outcome.written += events
        else:
            outcome.rejected += events

    def _settle_vanished(self, spill: SpillDir, outcome: Outcome) -> None:
        """Own files that another process replayed (or set aside) meanwhile."""
        for spill_id in list(self._own_files):
            state = spill.state(spill_id)
            if state != "pending":
                self._settle_file(spill_id, stored=int(state == "gone"), outcome=outcome)

    # --- life cycle ----------------------------------------------------------------

    def report_left(self, left: int) -> None:
        """At close, with ``left`` of this writer's events on disk: say where they wait."""
        if left and self._spill is not None:
            diagnostics.warning(
                "llamalogger closed with %d events in spill files in %s; a logger with this "
                "spill directory writes them once it reaches the database",
                left,
                self._spill.path,
            )

    def after_fork_in_child(self) -> None:
        self._reset()
