"""One batch's way to PostgreSQL: retries, bisection of a refused batch, dead letters, and
the spill directory while the database is unreachable.

Runs on the writer thread only. It returns what became of each batch as an ``Outcome``;
the writer adds those up (it owns the counters).
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import psycopg
import psycopg.errors

from .._records import Record
from .diagnostics import Reporter, diagnostics
from .sanitise import MAX_TEXT_LENGTH, clean_row, describe, fast_row
from .sink import SCHEMA_MISSING, Failure, classify, explain
from .spill import SpillDir, SpillFile, SpillFull

__all__ = ["Delivery", "Outcome", "Sink"]

# Backoff between attempts while the server does not take writes: quick first retries
# for a blip, capped at 0.5 s so that writing resumes within a second of the server
# accepting connections again. An attempt against a server that is down is one refused
# connection, so retrying this often costs nothing worth saving.
FIRST_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 0.5
# How often a writer that is not spilling looks for files other processes left: one
# directory listing, so that a forked child's spill files do not wait for a restart.
_SCAN_INTERVAL = 2.0
# The longest the writer replays spill files before it looks at its queue again.
_REPLAY_SLICE = 0.25


class Sink(Protocol):
    """Where batches go; ``BatchSink`` writes them to PostgreSQL."""

    def write(self, rows: Sequence[tuple[object, ...]]) -> None: ...

    def write_replay(self, spill_id: str, rows: Sequence[tuple[object, ...]]) -> bool: ...

    def cancel(self, timeout: float = ...) -> None: ...

    def target(self) -> dict[str, str]: ...

    def after_fork_in_child(self) -> None: ...

    def close(self) -> None: ...


@attrs.define
class Outcome:
    """What became of some records: each count is a change to the writer's counters."""

    written: int = 0
    rejected: int = 0
    dropped: int = 0
    on_disk: int = 0  # negative when spilled events of this writer are settled
    sanitised: int = 0
    retried: int = 0
    replayed: int = 0  # rows written from spill files, this writer's or anyone's


class _EncodedRows(Sequence[tuple[object, ...]]):
    """The COPY rows of ``records``, each encoded when the sink first takes it.

    Encoding while the rows stream lets the server work on the first rows while the writer
    encodes the next ones; encoding the whole batch first kept the server idle meanwhile.
    Encoded rows are kept, so a retry sends the same ones without encoding them again.
    """

    __slots__ = ("_changed", "_records", "_rows")

    def __init__(self, records: Sequence[Record]) -> None:
        self._records = records
        self._rows: list[tuple[object, ...]] = []
        self._changed: set[int] = set()  # positions that had to be cleaned (rare)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: Any) -> Any:
        self._encode_all()
        return self._rows[index]

    def __iter__(self) -> Iterator[tuple[object, ...]]:
        rows = self._rows
        yield from rows[:]  # those a failed attempt encoded already
        append = rows.append
        for record in itertools.islice(self._records, len(rows), None):  # one at a time
            message = record[3]
            # Most records go to COPY exactly as logged; this check is fast_row's own
            # first step, inlined because it runs once per event on the writer thread.
            if record[12] is None and message is not None and len(message) <= MAX_TEXT_LENGTH:
                append(record)
                yield record
            else:
                row, changed = _encode(record)
                if changed:
                    self._changed.add(len(rows))
                append(row)
                yield row

    def _encode_all(self) -> None:
        if len(self._rows) < len(self._records):
            for _ in self:
                pass

    def sanitised(self) -> set[int]:
        """The positions of the rows that had to be cleaned; encodes what is left."""
        self._encode_all()
        return self._changed


class _Attempt(enum.Enum):
    WRITTEN = "written"
    UNREACHABLE = "unreachable"  # not taken, and there is a spill directory to keep it
    GIVEN_UP = "given up"  # close() ran out of time while the server was unreachable


class Delivery:
    """Writes batches, keeps them on disk while the database is unreachable, replays them."""

    def __init__(
        self,
        sink: Sink,
        spill: SpillDir | None,
        dead_letter_path: Path | None,
        reporter: Reporter,
    ) -> None:
        self._sink = sink
        self.spill = spill
        self._dead_letter_path = dead_letter_path
        self._reporter = reporter
        # While spilling, every batch goes to a spill file, so that the order of events
        # survives the outage; the files are replayed, oldest first, before writing resumes.
        self.spilling = bool(self.pending_files())
        self._next_replay = 0.0
        self._next_scan = 0.0
        self._replay_delay = FIRST_RETRY_DELAY
        self._failing_since: float | None = None
        self._warned_spill = False
        self.deadline: float | None = None  # set by close(): stop retrying after this
        self.own_files: dict[str, int] = {}  # this writer's spill files not yet settled: events

    # --- batches -----------------------------------------------------------------

    def deliver(self, batch: Sequence[Record], taken_ns: int) -> Outcome:
        """Write ``batch`` (or keep it on disk) and say what became of every record."""
        outcome = Outcome()
        if self.spilling:  # behind older events on disk: no COPY form needed, only the file
            self.keep_on_disk(batch, taken_ns, outcome, first_pass=True)
            return outcome
        rows = _EncodedRows(batch)
        refused = self._write_or_keep(rows, batch, taken_ns, outcome)
        sanitised_already = rows.sanitised()  # all of them, whatever the write did
        outcome.sanitised += len(sanitised_already)
        if refused is not None:
            self._write_cleaned(batch, taken_ns, sanitised_already, outcome)
        return outcome

    def _write_cleaned(
        self,
        records: Sequence[Record],
        taken_ns: int,
        sanitised_already: set[int],
        outcome: Outcome,
    ) -> None:
        """The server refused a batch: retry it with every text made storable, then
        bisect what is still refused so that only the bad rows are lost."""
        rows: list[tuple[object, ...]] = []
        for position, record in enumerate(records):
            row, changed = _clean(record)
            rows.append(row)
            if changed and position not in sanitised_already:
                outcome.sanitised += 1
        self._bisect(rows, records, taken_ns, outcome)

    def _bisect(
        self,
        rows: list[tuple[object, ...]],
        records: Sequence[Record],
        taken_ns: int,
        outcome: Outcome,
    ) -> None:
        refused = self._write_or_keep(rows, records, taken_ns, outcome)
        if refused is None:
            return
        if len(rows) == 1:
            outcome.rejected += 1
            self._dead_letter(records[0], refused)
        else:
            middle = len(rows) // 2
            self._bisect(rows[:middle], records[:middle], taken_ns, outcome)
            self._bisect(rows[middle:], records[middle:], taken_ns, outcome)

    def _write_or_keep(
        self,
        rows: Sequence[tuple[object, ...]],
        records: Sequence[Record],
        taken_ns: int,
        outcome: Outcome,
    ) -> Exception | None:
        """Write ``rows`` (to a spill file while spilling) and count what became of them;
        returns the server's refusal, if it refused them."""
        result = _Attempt.UNREACHABLE if self.spilling else self._write_with_retry(rows, outcome)
        if result is _Attempt.WRITTEN:
            outcome.written += len(rows)
        elif result is _Attempt.GIVEN_UP:
            outcome.dropped += len(rows)
        elif result is _Attempt.UNREACHABLE:
            self.keep_on_disk(records, taken_ns, outcome)
        else:
            return result
        return None

    def _write_with_retry(
        self, rows: Sequence[tuple[object, ...]], outcome: Outcome
    ) -> _Attempt | Exception:
        """Write ``rows``; returns the exception when the server refused the data.

        A failure is retried at once on a new connection (a terminated backend, a
        restart), unless the write was cancelled because it hung; a second one means the
        server is unreachable: the rows go to disk if
        there is a spill directory, else they are retried with backoff until ``deadline``.
        """
        delay = FIRST_RETRY_DELAY
        attempts = 0
        while True:
            closing_ran_out = self.deadline is not None and time.monotonic() >= self.deadline
            if closing_ran_out and (attempts or self._failing_since is not None):
                return _Attempt.GIVEN_UP
            try:
                self._sink.write(rows)
            except Exception as exc:
                failure = _failure(exc)
                if failure is Failure.REJECT:
                    return exc
                attempts += 1
                outcome.retried += 1
                self._note_failure(exc)
                if attempts == 1 and not isinstance(exc, psycopg.errors.QueryCanceled):
                    continue  # a new connection may be all it takes; a cancelled write hangs
                if self.spill is not None:
                    return _Attempt.UNREACHABLE
                if self._sleep(delay):
                    return _Attempt.GIVEN_UP
                delay = min(delay * 2, MAX_RETRY_DELAY)
            else:
                self._note_success()
                return _Attempt.WRITTEN

    def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` before the next attempt; True once closing has run out of time."""
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return True
            delay = min(delay, remaining)
        time.sleep(delay)
        return False

    def _note_failure(self, exc: Exception) -> None:
        if self._failing_since is not None:
            return
        self._failing_since = time.monotonic()
        kept = f"on disk in {self.spill.path}" if self.spill is not None else "in memory"
        if isinstance(exc, SCHEMA_MISSING):
            diagnostics.warning(
                "llamalogger cannot write: the schema is missing or older than this version: "
                "%s; events are kept %s and written once it is migrated",
                explain(exc),  # which names `llamalog migrate`
                kept,
            )
        else:
            diagnostics.warning(
                "llamalogger cannot write to the database, retrying (events are kept %s): %s",
                kept,
                explain(exc),
            )

    def _note_success(self) -> None:
        if self._failing_since is not None:
            diagnostics.warning(
                "llamalogger reached the database again after %.1fs",
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None

    # --- the spill directory -------------------------------------------------------

    def keep_on_disk(
        self,
        records: Sequence[Record],
        taken_ns: int,
        outcome: Outcome,
        *,
        first_pass: bool = False,
    ) -> None:
        """Put ``records`` in a spill file and enter spilling mode; drop them (counted,
        reported) if the directory is full or cannot be written. ``first_pass``: nothing
        has looked at these records yet, so what cleaning changes is counted here."""
        spill = self.spill
        if spill is None:  # only reached when closing ran out of time
            outcome.dropped += len(records)
            return
        # Spilled rows are always the cleaned ones: a replay must not be refused.
        rows = []
        for record in records:
            row, changed = _clean(record)
            rows.append(row)
            outcome.sanitised += first_pass and changed
        try:
            file = spill.write(rows, taken_ns)
        except SpillFull:
            outcome.dropped += len(records)
            self._reporter.once(
                "spill full",
                logging.ERROR,
                "llamalogger's spill directory %s reached its cap of %d bytes (spill_max_bytes): "
                "events are dropped and counted in stats()['dropped'] until it drains",
                spill.path,
                spill.max_bytes,
            )
            return
        except OSError as exc:
            outcome.dropped += len(records)
            self._reporter.report(
                "spill write",
                logging.ERROR,
                "llamalogger cannot write a spill file in %s (%s); %d events are dropped and "
                "counted in stats()['dropped']",
                spill.path,
                exc,
                len(records),
            )
            return
        if not self._warned_spill:
            self._warned_spill = True
            diagnostics.warning(
                "llamalogger is keeping events in spill files in %s until the database takes "
                "writes again",
                spill.path,
            )
        if not self.spilling:
            self.spilling = True
            self._next_replay = time.monotonic() + self._replay_delay
        self.own_files[file.spill_id] = len(records)
        outcome.on_disk += len(records)

    def pending_files(self) -> list[SpillFile]:
        """The spill files to replay; none (reported) if the directory cannot be listed."""
        if self.spill is None:
            return []
        try:
            return self.spill.pending()
        except OSError as exc:
            self._reporter.report(
                "spill listing",
                logging.ERROR,
                "llamalogger cannot list its spill directory %s: %s",
                self.spill.path,
                exc,
            )
            return []

    def seconds_to_replay(self) -> float:
        """How long until a replay is due (infinity when not spilling)."""
        if not self.spilling:
            return float("inf")
        return max(0.0, self._next_replay - time.monotonic())

    def replay_due(self) -> bool:
        """Time to replay: while spilling, after the backoff; otherwise every few seconds
        if files wait in the directory (left by another process, a forked child, a crash)."""
        now = time.monotonic()
        if self.spilling:
            return now >= self._next_replay
        if self.spill is None or now < self._next_scan:
            return False
        self._next_scan = now + _SCAN_INTERVAL
        if self.pending_files():
            self.spilling = True  # keeps this writer's own order behind theirs
            return True
        return False

    def replay(self, until: float | None = None) -> Outcome:
        """Write the spill files, oldest first, for one slice of time (or ``until`` that
        moment); leave spilling mode once none is left."""
        outcome = Outcome()
        spill = self.spill
        if spill is None:
            self.spilling = False
            return outcome
        target = self._sink.target()
        slice_ends = time.monotonic() + _REPLAY_SLICE if until is None else until
        for file in self.pending_files():
            if time.monotonic() >= slice_ends:
                # A long backlog is written in slices: between them the writer puts new
                # batches on disk (behind the backlog), so the queue never fills meanwhile.
                self._next_replay = time.monotonic()
                return outcome
            claimed = spill.claim(file)
            if claimed is None:
                continue  # another process took it
            if not self._replay_file(spill, claimed, target, outcome):
                self._replay_delay = min(self._replay_delay * 2, MAX_RETRY_DELAY)
                self._next_replay = time.monotonic() + self._replay_delay
                return outcome
        self._settle_vanished(spill, outcome)
        self.spilling = False
        self._replay_delay = FIRST_RETRY_DELAY
        self._note_success()
        if self._warned_spill:
            self._warned_spill = False
            diagnostics.warning("llamalogger wrote every spilled event; writing directly again")
        return outcome

    def _replay_file(
        self, spill: SpillDir, file: SpillFile, target: dict[str, str], outcome: Outcome
    ) -> bool:
        """Replay one claimed file; False if the database is still unreachable."""
        try:
            written_for, rows = spill.read(file)
        except FileNotFoundError:
            return True  # taken over meanwhile by a process that found us gone: not ours
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = spill.set_aside(file, "unreadable")
            diagnostics.error("llamalogger cannot read spill file %s: %s", aside, exc)
            self._settle_file(file.spill_id, stored=0, outcome=outcome)
            return True
        if written_for is not None and written_for != target:
            # Not ours to write: give the file back for a logger of its own database.
            spill.leave_alone(file)
            self._reporter.once(
                ("foreign spill", file.spill_id),
                logging.WARNING,
                "llamalogger leaves spill file %s alone: it was written for %s, not %s",
                file.path.name,
                written_for,
                target,
            )
            return True
        try:
            inserted = self._sink.write_replay(file.spill_id, rows)
        except Exception as exc:
            if _failure(exc) is Failure.REJECT:
                aside = spill.set_aside(file, "rejected")
                diagnostics.error(
                    "llamalogger: the database refused spill file %s (%s)", aside, explain(exc)
                )
                self._settle_file(file.spill_id, stored=0, outcome=outcome)
                return True
            outcome.retried += 1
            self._note_failure(exc)
            spill.release(file)
            return False
        spill.remove(file)
        # Not inserted: an earlier replay of this file had committed already.
        outcome.replayed += len(rows) if inserted else 0
        self._settle_file(file.spill_id, stored=len(rows), outcome=outcome)
        return True

    def _settle_file(self, spill_id: str, *, stored: int, outcome: Outcome) -> None:
        events = self.own_files.pop(spill_id, None)
        if events is None:
            return  # another writer's file: it is not in this writer's counters
        outcome.on_disk -= events
        if stored:
            outcome.written += events
        else:
            outcome.rejected += events

    def _settle_vanished(self, spill: SpillDir, outcome: Outcome) -> None:
        """Own files that another process replayed (or set aside) meanwhile."""
        for spill_id in list(self.own_files):
            state = spill.state(spill_id)
            if state != "pending":
                self._settle_file(spill_id, stored=int(state == "gone"), outcome=outcome)

    # --- refused events ----------------------------------------------------------

    def _dead_letter(self, record: Record, exc: BaseException) -> None:
        """Keep a record the database refused: in the dead-letter file if there is one,
        and in a rate-limited report per reason."""
        reason = explain(exc)
        sqlstate = getattr(exc, "sqlstate", None)
        entry = {"reason": reason, "sqlstate": sqlstate, "event": _describe(record)}
        line = json.dumps(entry, ensure_ascii=False, default=repr)
        if self._dead_letter_path is not None:
            try:
                with self._dead_letter_path.open("a", encoding="utf-8") as file:
                    file.write(line + "\n")
            except OSError as error:
                self._reporter.report(
                    "dead letter file",
                    logging.ERROR,
                    "llamalogger cannot write its dead-letter file: %s",
                    error,
                )
        where = f"; kept in {self._dead_letter_path}" if self._dead_letter_path else ""
        self._reporter.report(
            ("rejected", sqlstate),
            logging.ERROR,
            "llamalogger: the database rejected an event (%s)%s; rejected events are counted "
            "in stats()['rejected']. First of them: %s",
            reason,
            where,
            line,
        )

    def after_fork_in_child(self) -> None:
        self.spilling = bool(self.pending_files())
        self._failing_since = None
        self._warned_spill = False
        self.own_files = {}
        self._replay_delay = FIRST_RETRY_DELAY
        self._next_replay = 0.0


def _failure(exc: Exception) -> Failure:
    """What to do about a failed write. Anything but the server's word or an adapter's
    refusal of a value is a bug: it is raised on, so that the writer reports it and
    counts the batch, instead of retrying it forever."""
    failure = classify(exc)
    if failure is Failure.RETRY and not isinstance(exc, psycopg.Error):
        raise exc
    return failure


# What a record becomes on its way to COPY. The sanitising functions never raise for any
# input; these wrappers keep even a bug there from costing more than this one record.


def _encode(record: Record) -> tuple[tuple[object, ...], bool]:
    try:
        return fast_row(record)
    except BaseException:
        return _clean(record)


def _clean(record: Record) -> tuple[tuple[object, ...], bool]:
    try:
        return clean_row(record)
    except BaseException:
        row, _ = clean_row((*record[:12], None))
        stand_in = b'\x01{"llamalogger_error": "these details could not be encoded"}'
        return (*row[:12], stand_in), True


def _describe(record: Record) -> dict[str, object]:
    try:
        return describe(record)
    except BaseException:
        return describe((*record[:12], None))
