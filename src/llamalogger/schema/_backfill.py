"""The root_job_id backfill: a job -> root map built once, then id-range batches that commit.

The rules are those of docs/design.md section 4 and of ``llama_log_backfill_root_job_id()``
(migration 0002), which does the same in one transaction; this one never holds a row lock for
longer than one batch, so writers and readers go on while it runs, and a kill loses at most
the batch in flight.
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
# Below one row to fill in this many, the map is built from those rows' jobs and ancestors.
_FEW_PENDING = 20
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
    full_map: bool | None = None,
) -> BackfillReport:
    """Fill NULL ``root_job_id`` of rows with ``id > resume_after`` batch by batch; commit each.

    ``conn`` must be in autocommit mode. The map of every job's root is built once, from the
    rows present when it starts; rows that arrive later are the insert trigger's (0004) or the
    next run's. ``filled`` counts this call's rows; the other counts describe the table at the
    end. ``full_map`` chooses how the map is built (None: by the share of rows to fill; the
    tests force each way).
    """
    table = sql.SQL("{}.llama_log").format(sql.Identifier(schema))
    bounds = conn.execute(
        sql.SQL(
            "SELECT min(id), max(id), count(*) FROM {}"
            " WHERE root_job_id IS NULL AND job_id IS NOT NULL AND id > %s"
        ).format(table),
        (resume_after,),
    ).fetchone()
    filled = 0
    if bounds is not None and bounds[0] is not None:
        low, high, pending = int(bounds[0]), int(bounds[1]), int(bounds[2])
        if full_map is None:
            full_map = pending * _FEW_PENDING > _estimated_rows(conn, schema)
        _build_root_map(conn, table, None if full_map else resume_after)
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


def _estimated_rows(conn: psycopg.Connection[Any], schema: str) -> float:
    row = conn.execute(
        "SELECT c.reltuples FROM pg_catalog.pg_class AS c"
        " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = 'llama_log'",
        (schema,),
    ).fetchone()
    return 0.0 if row is None else float(row[0])  # -1 (never analysed) counts as small


def _build_root_map(
    conn: psycopg.Connection[Any], table: sql.Composable, only_pending_after: int | None
) -> None:
    """``pg_temp.llamalog_backfill_roots(job_id, root)`` for every job whose root is known.

    The same set-based descent as ``llama_log_backfill_root_job_id()``: a job's parent is that
    of its earliest row; descending from the roots reaches each job once, and the jobs it never
    reaches are those on or below a cycle, which get no entry (unresolved).

    With ``only_pending_after``, the jobs are only those of the rows still to fill (after that
    id) and their ancestors, found by walking up through the job_id index: for a few late rows
    in a large table, a few index look-ups instead of sorting the whole table. The set is
    closed upwards, so a parent missing from it has no rows at all, as in the full map.
    """
    if only_pending_after is None:
        jobs = sql.SQL(
            "SELECT DISTINCT ON (l.job_id) l.job_id, l.parent_job_id AS parent"
            " FROM {} AS l WHERE l.job_id IS NOT NULL ORDER BY l.job_id, l.id"
        ).format(table)
    else:
        # "id + 0": the earliest row of one job through the job_id index, never a walk along
        # the primary key. UNION (not ALL) ends the walk on a cycle.
        earliest = sql.SQL(
            "SELECT l.parent_job_id AS parent FROM {} AS l"
            " WHERE l.job_id = up.job_id ORDER BY l.id + 0 LIMIT 1"
        ).format(table)
        jobs = sql.SQL(
            "WITH RECURSIVE up (job_id) AS ("
            " SELECT DISTINCT l.job_id FROM {table} AS l"
            "  WHERE l.root_job_id IS NULL AND l.job_id IS NOT NULL AND l.id > {after}"
            " UNION"
            " SELECT first.parent FROM up CROSS JOIN LATERAL ({earliest}) AS first"
            "  WHERE first.parent IS NOT NULL"
            ") SELECT up.job_id, first.parent FROM up CROSS JOIN LATERAL ({earliest}) AS first"
        ).format(table=table, after=sql.Literal(only_pending_after), earliest=earliest)
    with conn.transaction():
        # One scan of the table under ACCESS SHARE, which blocks no writer or reader; on a
        # large table it takes as long as it takes, so no statement_timeout here.
        conn.execute("SELECT set_config('statement_timeout', '0', true)")
        conn.execute("DROP TABLE IF EXISTS pg_temp.llamalog_backfill_jobs")
        conn.execute("DROP TABLE IF EXISTS pg_temp.llamalog_backfill_roots")
        conn.execute(sql.SQL("CREATE TEMPORARY TABLE llamalog_backfill_jobs AS {}").format(jobs))
        conn.execute("ALTER TABLE pg_temp.llamalog_backfill_jobs ADD PRIMARY KEY (job_id)")
        conn.execute("CREATE INDEX ON pg_temp.llamalog_backfill_jobs (parent)")
        conn.execute("ANALYZE pg_temp.llamalog_backfill_jobs")
        conn.execute(
            "CREATE TEMPORARY TABLE llamalog_backfill_roots AS"
            " WITH RECURSIVE tree (job_id, root) AS ("
            "  SELECT j.job_id, coalesce(j.parent, j.job_id)"
            "  FROM pg_temp.llamalog_backfill_jobs AS j"
            "  WHERE j.parent IS NULL OR NOT EXISTS ("
            "   SELECT FROM pg_temp.llamalog_backfill_jobs AS p WHERE p.job_id = j.parent)"
            "  UNION ALL"
            "  SELECT child.job_id, tree.root"
            "  FROM pg_temp.llamalog_backfill_jobs AS child"
            "  JOIN tree ON child.parent = tree.job_id"
            " ) SELECT job_id, root FROM tree"
        )
        conn.execute("ALTER TABLE pg_temp.llamalog_backfill_roots ADD PRIMARY KEY (job_id)")
        conn.execute("ANALYZE pg_temp.llamalog_backfill_roots")
        conn.execute("DROP TABLE pg_temp.llamalog_backfill_jobs")


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
