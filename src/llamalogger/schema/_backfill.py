"""The root_job_id backfill: a job -> root map built once, then id-range batches that commit.

The map comes from ``llama_log_job_roots()``, the one statement of the rules of
docs/design.md section 4 (migration 0005), which the insert trigger and
``llama_log_backfill_root_job_id()`` call too. A backfill never holds a row lock for longer
than one batch, so writers and readers go on while it runs, and a kill loses at most the batch
in flight.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import attrs
import psycopg
import psycopg.errors
from psycopg import sql

from .._errors import MigrationError
from ._files import migration_step

__all__ = [
    "BackfillReport",
    "Checkpoint",
    "Progress",
    "backfill_batches",
    "backoff",
]

#: Called with (what, rows done, rows in all) after every batch; see ``ProgressDisplay``.
Progress = Callable[[str, int, int], None]

#: Called inside each batch's transaction with the highest id the batch covered, so that the
#: migration runner's record of progress commits together with the rows.
Checkpoint = Callable[[psycopg.Connection[Any], int], None]

# Batches start small and grow towards the target time; the bounds keep one odd measurement
# (a checkpoint, a cold cache) from producing a batch far too big or pointlessly small.
_FIRST_BATCH = 2_000
_MIN_BATCH = 100
_MAX_BATCH = 2_000_000
# The migration and step that define the rule; the map is built by this same text.
_RULE_STEP = ("0005", "job_roots_function")
_RULE_NAME = "FUNCTION llama_log_job_roots("
# A batch that takes this long was sized wrongly; it is cancelled and retried at half the size.
_BATCH_STATEMENT_TIMEOUT_MS = 30_000


@attrs.frozen
class BackfillReport:
    """Row counts from the root_job_id backfill; ``str()`` is the one-line report the CLI prints."""

    filled: int
    orphans: int
    unresolved: int
    total: int

    def __str__(self) -> str:
        return (
            f"backfill: {self.filled} filled, {self.orphans} orphans, "
            f"{self.unresolved} unresolved, {self.total} total"
        )


def backoff(attempt: int, *, base: float = 0.05, cap: float = 2.0) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): exponential, capped, full jitter."""
    # Full jitter: runners that collided on a lock do not collide again on the same beat.
    return random.uniform(0, min(cap, base * 2**attempt))  # noqa: S311 - timing, not secrets


def backfill_batches(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    resume_after: int = 0,
    checkpoint: Checkpoint | None = None,
    progress: Progress | None = None,
    label: str = "backfill",
    batch_seconds: float = 0.2,
    lock_timeout: float = 0.2,
    lock_retries: int = 10,
) -> BackfillReport:
    """Fill NULL ``root_job_id`` of rows with ``id > resume_after`` batch by batch; commit each.

    ``conn`` must be in autocommit mode. The roots of the jobs left to fill are looked up
    once, from the rows present when it starts; rows that arrive later are the insert
    trigger's (0004) or the next run's. ``filled`` counts this call's rows; the other counts
    describe the table at the end.
    """
    table = sql.SQL("{}.llama_log").format(sql.Identifier(schema))
    bounds = conn.execute(
        sql.SQL(
            "SELECT min(id), max(id) FROM {}"
            " WHERE root_job_id IS NULL AND job_id IS NOT NULL AND id > %s"
        ).format(table),
        (resume_after,),
    ).fetchone()
    filled = 0
    if bounds is not None and bounds[0] is not None:
        low, high = int(bounds[0]), int(bounds[1])
        _build_root_map(conn, schema, table, resume_after)
        try:
            filled = _update_in_batches(
                conn,
                table,
                low,
                high,
                checkpoint=checkpoint,
                progress=progress,
                label=label,
                batch_seconds=batch_seconds,
                lock_timeout=lock_timeout,
                lock_retries=lock_retries,
            )
        finally:
            if not conn.broken:
                conn.execute("DROP TABLE IF EXISTS pg_temp.llamalog_backfill_roots")
    counts = conn.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE job_id IS NULL),"
            " count(*) FILTER (WHERE job_id IS NOT NULL AND root_job_id IS NULL),"
            " count(*) FROM {}"
        ).format(table)
    ).fetchone()
    if counts is None:  # an aggregate always returns a row; this guards the type only
        raise MigrationError("the backfill's final count returned no row")
    return BackfillReport(filled, int(counts[0]), int(counts[1]), int(counts[2]))


def _build_root_map(
    conn: psycopg.Connection[Any], schema: str, table: sql.Composable, after: int
) -> None:
    """``pg_temp.llamalog_backfill_roots(job_id, root)`` for the jobs of the rows to fill.

    Those are the rows after ``after`` without a root; the rule walks up from their jobs
    through the job_id index, so a few late rows in a large table cost a few look-ups. Jobs on
    or below a cycle get no entry (unresolved).
    """
    with conn.transaction():
        # One read of the table under ACCESS SHARE, which blocks no writer or reader; on a
        # large table it takes as long as it takes, so no statement_timeout here.
        conn.execute("SELECT set_config('statement_timeout', '0', true)")
        _create_rule(conn, schema)
        conn.execute("DROP TABLE IF EXISTS pg_temp.llamalog_backfill_roots")
        conn.execute(
            sql.SQL(
                "CREATE TEMPORARY TABLE llamalog_backfill_roots AS"
                " SELECT r.job_id, r.root FROM pg_temp.llama_log_job_roots(ARRAY("
                "  SELECT DISTINCT l.job_id FROM {} AS l"
                "  WHERE l.root_job_id IS NULL AND l.job_id IS NOT NULL AND l.id > %s)) AS r"
            ).format(table),
            (after,),
        )
        conn.execute("ALTER TABLE pg_temp.llamalog_backfill_roots ADD PRIMARY KEY (job_id)")
        conn.execute("ANALYZE pg_temp.llamalog_backfill_roots")


def _create_rule(conn: psycopg.Connection[Any], schema: str) -> None:
    """The rule of migration 0005, as a function of this session, for ``schema``.

    From its one definition in the migration file, so the backfill and the trigger cannot
    drift apart; temporary, because the backfill steps of 0002 and 0004 run before 0005 has
    created it in the schema, and the schema is left as its migrations made it.
    """
    text = migration_step(*_RULE_STEP).sql
    if text.count(_RULE_NAME) != 1:  # a packaging mistake, caught by the tests
        raise MigrationError(f"migration {_RULE_STEP[0]} does not define the root rule once")
    # The function captures this search_path (SET search_path FROM CURRENT), so its
    # unqualified names mean the schema's tables.
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    conn.execute(text.replace(_RULE_NAME, "FUNCTION pg_temp." + _RULE_NAME[len("FUNCTION ") :]))


def _update_in_batches(
    conn: psycopg.Connection[Any],
    table: sql.Composable,
    low: int,
    high: int,
    *,
    checkpoint: Checkpoint | None,
    progress: Progress | None,
    label: str,
    batch_seconds: float,
    lock_timeout: float,
    lock_retries: int,
) -> int:
    update = sql.SQL(
        "UPDATE {} AS l SET root_job_id = m.root"
        " FROM pg_temp.llamalog_backfill_roots AS m"
        " WHERE l.id >= %s AND l.id < %s AND l.root_job_id IS NULL AND l.job_id = m.job_id"
    ).format(table)
    span = high - low + 1
    size = _FIRST_BATCH
    start = low
    filled = 0
    failures = 0
    while start <= high:
        end = min(start + size, high + 1)
        began = time.monotonic()
        try:
            with conn.transaction():
                # A batch waits on row locks at most this long (a writer updating the same
                # rows), then is retried: it never queues long behind someone else.
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, true),"
                    " set_config('statement_timeout', %s, true),"
                    # A nested loop from the id range into the map's key updates the rows in
                    # table order. Once statistics exist (autovacuum analyses the table while
                    # the backfill runs) the planner prefers to hash the map, and the rows
                    # then come in hash order, scattered over the table and its six indexes:
                    # about twice as slow, measured on 1M rows.
                    " set_config('enable_hashjoin', 'off', true),"
                    " set_config('enable_mergejoin', 'off', true)",
                    (f"{round(lock_timeout * 1000)}ms", f"{_BATCH_STATEMENT_TIMEOUT_MS}ms"),
                )
                filled_now = conn.execute(update, (start, end)).rowcount
                if checkpoint is not None:
                    checkpoint(conn, end - 1)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            failures += 1
            if failures > lock_retries:
                raise MigrationError(
                    f"the backfill could not update ids {start}..{end - 1} after "
                    f"{failures} attempts ({type(exc).__name__}); the batches before are "
                    "committed: run it again to resume"
                ) from exc
            size = max(_MIN_BATCH, size // 2)
            time.sleep(backoff(failures))
            continue
        failures = 0
        filled += max(filled_now, 0)
        elapsed = time.monotonic() - began
        # Aim at batch_seconds, changing the size by at most a factor of 2 per batch.
        factor = min(2.0, max(0.5, batch_seconds / max(elapsed, 1e-3)))
        size = min(_MAX_BATCH, max(_MIN_BATCH, int(size * factor)))
        start = end
        if progress is not None:
            progress(label, min(span, end - low), span)
    return filled
