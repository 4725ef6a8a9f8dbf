"""One batch's way to PostgreSQL: retries, bisection of a refused batch, dead letters.

Runs on the writer thread only. A batch the database does not take while there is a
spill directory goes to the backlog; what became of every event is returned as an
``Outcome`` for the ledger.
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import psycopg.errors

from .._records import JOB, Record
from .backlog import Backlog
from .diagnostics import Reporter
from .ledger import Outcome
from .retry import FIRST_RETRY_DELAY, MAX_RETRY_DELAY, Deadline, Outage, failure
from .sanitise import MAX_TEXT_LENGTH, clean, described, encode
from .sink import Failure, ServerLimit, Sink, explain
from .write_size import WriteSize

__all__ = ["Delivery"]


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
                row, changed = encode(record)
                if changed:
                    self._changed.add(len(rows))
                append(row)
                yield row

    def _encode_all(self) -> None:
        if len(self._rows) < len(self._records):
            for _ in self:
                pass

    def holds_jobs(self) -> bool:
        """Whether any row is a job record's, read from the records without encoding them
        (see ``BatchSink.write``); a batch off the queue has counted its job records."""
        jobs = getattr(self._records, "jobs", None)
        if isinstance(jobs, int):
            return jobs > 0
        return any(record[1] == JOB for record in self._records)

    def sanitised(self) -> set[int]:
        """The positions of the rows that had to be cleaned; encodes what is left."""
        self._encode_all()
        return self._changed


class _Attempt(enum.Enum):
    WRITTEN = "written"
    UNREACHABLE = "unreachable"  # not taken, and there is a spill directory to keep it
    GIVEN_UP = "given up"  # close() ran out of time while the server was unreachable
    TOO_BIG = "too big"  # a limit of the server's cancelled it: write it in halves


class Delivery:
    """Writes batches to the sink; hands what the database does not take to the backlog."""

    def __init__(
        self,
        sink: Sink,
        backlog: Backlog,
        *,
        dead_letter_path: Path | None,
        reporter: Reporter,
        outage: Outage,
        deadline: Deadline,
    ) -> None:
        self._sink = sink
        self._backlog = backlog
        self._dead_letter_path = dead_letter_path
        self._reporter = reporter
        self._outage = outage
        self._deadline = deadline
        self._size = WriteSize()

    # --- batches -----------------------------------------------------------------

    def deliver(self, batch: Sequence[Record], taken_ns: int) -> Outcome:
        """Write ``batch`` (or keep it on disk) and say what became of every record."""
        outcome = Outcome()
        if self._backlog.spilling:  # behind older events on disk: only the file is needed
            self._backlog.keep(batch, taken_ns, outcome, first_pass=True)
            return outcome
        for part in self._size.parts(batch):
            self._deliver_part(part, taken_ns, outcome)
        return outcome

    def _deliver_part(self, records: Sequence[Record], taken_ns: int, outcome: Outcome) -> None:
        rows = _EncodedRows(records)
        refused = self._write_or_keep(rows, records, taken_ns, outcome)
        if refused is _Attempt.TOO_BIG:  # each half counts what cleaning changed in it
            middle = len(records) // 2
            self._deliver_part(records[:middle], taken_ns, outcome)
            self._deliver_part(records[middle:], taken_ns, outcome)
            return
        if self._backlog.holding:  # kept in memory, to be delivered again: counted then
            return
        sanitised_already = rows.sanitised()  # all of them, whatever the write did
        outcome.sanitised += len(sanitised_already)
        if refused is not None:
            self._write_cleaned(records, taken_ns, sanitised_already, outcome)

    def set_aside(self, batch: Sequence[Record], taken_ns: int) -> Outcome:
        """Keep ``batch`` on disk without trying the database (its connection is held by a
        write that never returned); dropped, counted, if there is no spill directory."""
        outcome = Outcome()
        self._backlog.keep(batch, taken_ns, outcome)
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
            row, changed = clean(record)
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
        if isinstance(refused, Exception) and len(rows) == 1:
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
    ) -> Exception | Literal[_Attempt.TOO_BIG] | None:
        """Write ``rows`` (to a spill file while spilling) and count what became of them;
        returns the server's refusal, if it refused them, or ``TOO_BIG`` if a limit of the
        server's cancelled them (never for one row)."""
        result = (
            _Attempt.UNREACHABLE
            if self._backlog.spilling
            else self._write_with_retry(rows, outcome)
        )
        if result is _Attempt.WRITTEN:
            outcome.written += len(rows)
        elif result is _Attempt.GIVEN_UP:
            outcome.dropped += len(rows)
        elif result is _Attempt.UNREACHABLE:
            self._backlog.keep(records, taken_ns, outcome)
        else:
            return result  # refused, or too big
        return None

    def _write_with_retry(
        self, rows: Sequence[tuple[object, ...]], outcome: Outcome
    ) -> _Attempt | Exception:
        """Write ``rows``; returns the exception when the server refused the data.

        A failure is retried at once on a new connection (a terminated backend, a
        restart), unless the write was cancelled because it hung; a second one means the
        server is unreachable: the rows go to disk if there is a spill directory, else
        they are retried with backoff until the closing deadline.
        """
        delay = FIRST_RETRY_DELAY
        attempts = 0
        while True:
            if self._deadline.passed() and (attempts or self._outage.failing):
                # Closing has no time left for the database: to disk, if there is one.
                return _Attempt.UNREACHABLE if self._backlog.enabled else _Attempt.GIVEN_UP
            try:
                self._sink.write(rows)
            except Exception as exc:
                kind = failure(exc)
                if kind is Failure.REJECT:
                    return exc
                if kind is Failure.SHRINK and len(rows) > 1:
                    outcome.retried += 1
                    self._shrink(exc, len(rows))
                    return _Attempt.TOO_BIG
                attempts += 1
                outcome.retried += 1
                cancelled = isinstance(exc, psycopg.errors.QueryCanceled)
                if cancelled and self._deadline.passed() and self._backlog.enabled:
                    # close() cancelled a write still going: no outage, the rest to disk.
                    return _Attempt.UNREACHABLE
                self._outage.failed(exc)
                if attempts == 1 and not cancelled:
                    continue  # a new connection may be all it takes; a cancelled write hangs
                if self._backlog.enabled:
                    return _Attempt.UNREACHABLE
                if self._deadline.sleep(delay):
                    return _Attempt.GIVEN_UP
                delay = min(delay * 2, MAX_RETRY_DELAY)
            else:
                self._outage.succeeded()
                self._size.fitted(len(rows))
                return _Attempt.WRITTEN

    def _shrink(self, exc: Exception, rows: int) -> None:
        """A limit of the server's cancelled a write of ``rows``: smaller writes from now
        on, and one warning per limit naming it."""
        most = self._size.too_big(rows)
        setting = exc.setting if isinstance(exc, ServerLimit) else type(exc).__name__
        self._reporter.once(
            ("server limit", setting),
            logging.WARNING,
            "llamalogger: %s cancelled a write of %d rows (the writer lifts its own "
            "statement, lock and idle timeouts where the server allows it); it goes on with "
            "smaller writes, at most %d rows each, and keeps every event",
            setting,
            rows,
            most,
        )

    # --- refused events ----------------------------------------------------------

    def _dead_letter(self, record: Record, exc: BaseException) -> None:
        """Keep a record the database refused: in the dead-letter file if there is one,
        and in a rate-limited report per reason."""
        reason = explain(exc)
        sqlstate = getattr(exc, "sqlstate", None)
        kind = "job" if record[1] == JOB else "event"
        entry = {"reason": reason, "sqlstate": sqlstate, kind: described(record)}
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
            "llamalogger: the database rejected %s (%s)%s; rejected events and job records "
            "are counted in stats()['rejected']. First of them: %s",
            "a job record" if kind == "job" else "an event",
            reason,
            where,
            line,
        )
