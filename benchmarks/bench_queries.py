"""job_tree() against the recursive CTE it replaces, side by side on the same table; and
what runs() (``llamalog runs``) costs for windows of growing size.

    python benchmarks/bench_queries.py [--dsn DSN] [--imports 10000] [--rows-per-import 100]

Loads imports x rows-per-import rows (default 1,000,000 across 10,000 imports, each a
3-level tree of 17 jobs, in time order with the rows of 100 concurrent imports interleaved
as workers would write them) and the imports' job records (every 10th import with a failed
job, every 100th still running: no records) into a fresh schema, then times, for the same
randomly chosen roots:

- ``job_tree(root)``: one query on the ``root_job_id`` index;
- the way before root ids existed: a recursive CTE that walks ``parent_job_id`` down from
  the root job, with the indexes schema 0001 had (none on ``parent_job_id``);
- the same CTE with an extra index on ``parent_job_id`` (which 0001 never had), to show
  how much of the gap an index alone closes.

Both variants feed the same Python assembly (``queries._tree_from_rows``) and are checked to
give the same tree. Prints median times, ratios and the plans' index use. Then times
``runs(since=...)`` for windows holding 1 %, 10 % and all of the imports: the runs of events
only (no ``llama_job`` records), the case where the most is read from ``llama_log``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from _support import scratch_schema
from psycopg import sql

from llamalogger.queries import JobNode, _tree_from_rows, job_tree, runs

COLUMNS = (
    "logged_at, category, level, message, job_id, parent_job_id, root_job_id, job_name,"
    " entity_type, entity_id"
)


START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # import number n logs from START + n seconds


JOB_COLUMNS = "job_id, parent_job_id, root_job_id, job_name, status, started_at, ended_at"


def import_rows(
    number: int, per_import: int, start: dt.datetime
) -> tuple[str, list[tuple], list[tuple]]:
    """One import: a root job, 8 track jobs, each with one enrich job (17 jobs); its events
    and its job records. Every 10th import has a failed enrich job (a FAILED event and a
    failed record); every 100th is still running (no records)."""
    root = str(uuid.uuid4())
    jobs: list[tuple[str, str | None, str]] = [(root, None, "import-album")]
    for _ in range(8):
        track = str(uuid.uuid4())
        jobs.append((track, root, "import-track"))
        jobs.append((str(uuid.uuid4()), track, "enrich-track"))
    rows = []
    for index in range(per_import):
        job_id, parent, name = jobs[index % len(jobs)]
        when = start + dt.timedelta(seconds=number, microseconds=index)
        rows.append((when, "CREATED", "info", "event", job_id, parent, root, name, "track",
                     f"{number}-{index}"))  # fmt: skip
    failed = jobs[2][0] if number % 10 == 5 else None
    if failed is not None:
        when = start + dt.timedelta(seconds=number, microseconds=per_import)
        rows.append((when, "FAILED", "error", "boom", failed, jobs[2][1], root, jobs[2][2],
                     None, None))  # fmt: skip
    records = []
    if number % 100 != 99:
        begun = start + dt.timedelta(seconds=number)
        ended = begun + dt.timedelta(microseconds=per_import + 1)
        for job_id, parent, name in jobs:
            status = "failed" if job_id == failed else "succeeded"
            records.append((job_id, parent, root, name, status, begun, ended))
    return root, rows, records


CONCURRENT = 100  # imports running at once: their rows interleave on disk


def load(dsn: str, schema: str, imports: int, per_import: int) -> list[str]:
    roots: list[str] = []
    ordered: list[tuple] = []
    records: list[tuple] = []
    for number in range(imports):
        root, batch, ended = import_rows(number, per_import, START)
        roots.append(root)
        ordered.extend(batch)
        records.extend(ended)
    # Rows reach the table roughly in time order, those of concurrent imports interleaved:
    # shuffled within runs of CONCURRENT imports' rows.
    shuffle, chunk = random.Random(7).shuffle, CONCURRENT * per_import
    rows: list[tuple] = []
    for at in range(0, len(ordered), chunk):
        part = ordered[at : at + chunk]
        shuffle(part)
        rows.extend(part)
    log = sql.SQL("{}.llama_log").format(sql.Identifier(schema))
    jobs = sql.SQL("{}.llama_job").format(sql.Identifier(schema))
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            for table, columns, values in ((log, COLUMNS, rows), (jobs, JOB_COLUMNS, records)):
                statement = sql.SQL("COPY {} ({}) FROM STDIN").format(table, sql.SQL(columns))
                with cur.copy(statement) as copy:
                    for row in values:
                        copy.write_row(row)
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(log))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(jobs))
    return roots


def cte_query(table: sql.Composed) -> sql.Composed:
    # LATERAL ... OFFSET 0 is not flattened into a hash join, so the rows of each job found
    # are an index lookup on job_id: the best plan the 0001 schema allows, so that the
    # comparison is not won by a bad plan.
    return sql.SQL(
        """
        WITH RECURSIVE jobs (job_id) AS (
            SELECT %(root)s::varchar
            UNION
            SELECT l.job_id FROM {table} AS l JOIN jobs ON l.parent_job_id = jobs.job_id
        )
        SELECT l.job_id,
               (array_agg(l.parent_job_id ORDER BY l.id))[1],
               (array_agg(l.job_name ORDER BY l.id))[1],
               l.category::text, count(*), min(l.logged_at), max(l.logged_at)
        FROM jobs,
             LATERAL (SELECT * FROM {table} AS r WHERE r.job_id = jobs.job_id OFFSET 0) AS l
        GROUP BY l.job_id, l.category
        """
    ).format(table=table)


def timed(fn: Callable[[str], Any], roots: list[str]) -> tuple[float, list[Any]]:
    results, times = [], []
    for root in roots:
        started = time.perf_counter()
        results.append(fn(root))
        times.append(time.perf_counter() - started)
    return statistics.median(times), results


def index_use(conn: psycopg.Connection[Any], query: sql.Composed, params: Any) -> str:
    plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, COSTS OFF) ") + query, params).fetchall()
    nodes = {line.split(" (actual")[0].strip().removeprefix("->").strip() for (line,) in plan}
    return "; ".join(sorted(node for node in nodes if "Scan" in node))


def shape(tree: JobNode | None) -> list[tuple[str, str | None, int]]:
    assert tree is not None
    return sorted((node.job_id, node.parent_job_id, node.events) for node in tree.walk())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--imports", type=int, default=10_000)
    parser.add_argument("--rows-per-import", type=int, default=100)
    parser.add_argument("--samples", type=int, default=25)
    args = parser.parse_args()
    with scratch_schema(args.dsn) as (dsn, schema, version):
        table = sql.SQL("{}.llama_log").format(sql.Identifier(schema))
        started = time.perf_counter()
        roots = load(dsn, schema, args.imports, args.rows_per_import)
        total = args.imports * args.rows_per_import
        print(f"PostgreSQL {version}: loaded {total:,} rows in "
              f"{args.imports:,} imports in {time.perf_counter() - started:.1f} s")  # fmt: skip
        sample = random.Random(11).sample(roots, args.samples)
        with psycopg.connect(dsn, autocommit=True) as conn:
            query = cte_query(table)

            def via_cte(root: str) -> JobNode | None:
                return _tree_from_rows(conn.execute(query, {"root": root}).fetchall(), root)

            def via_root(root: str) -> JobNode | None:
                return job_tree(conn, root, schema=schema)

            # Warm the cache with every sampled import first, so neither variant pays
            # for reading pages from disk that the other then finds in memory.
            for root in sample:
                via_root(root)
            new, new_trees = timed(via_root, sample)
            old, old_trees = timed(via_cte, sample[: max(3, args.samples // 5)])
            assert [shape(t) for t in old_trees] == [shape(t) for t in new_trees[: len(old_trees)]]
            conn.execute(sql.SQL("CREATE INDEX ON {} (parent_job_id)").format(table))
            conn.execute(sql.SQL("ANALYZE {}").format(table))
            indexed, indexed_trees = timed(via_cte, sample)
            assert [shape(t) for t in indexed_trees] == [shape(t) for t in new_trees]
            rows = sum(node.events for node in new_trees[0].walk())
            print(
                f"one import: {rows} rows in {sum(1 for _ in new_trees[0].walk())} jobs; "
                f"median of {len(sample)} roots (CTE without index: {len(old_trees)})"
            )
            print(f"job_tree (root_job_id index):             {new * 1000:8.2f} ms")
            print(
                f"recursive CTE, 0001 indexes:              {old * 1000:8.2f} ms"
                f"  -> job_tree is {old / new:,.0f}x faster"
            )
            print(
                f"recursive CTE + parent_job_id index:      {indexed * 1000:8.2f} ms"
                f"  -> job_tree is {indexed / new:,.1f}x faster"
            )
            tree_sql = sql.SQL(
                "SELECT job_id, category, count(*) FROM {} WHERE root_job_id = %s"
                " GROUP BY job_id, category"
            ).format(table)
            print("plan, job_tree:      " + index_use(conn, tree_sql, (sample[0],)))
            print("plan, CTE + index:   " + index_use(conn, query, {"root": sample[0]}))
            conn.execute(
                sql.SQL("DROP INDEX {}").format(
                    sql.Identifier(schema, "llama_log_parent_job_id_idx")
                )
            )
            print("plan, CTE, 0001:     " + index_use(conn, query, {"root": sample[0]}))
            time_runs(conn, schema, args.imports)


def time_runs(conn: psycopg.Connection[Any], schema: str, imports: int) -> None:
    """``runs()`` for the newest 20 runs of windows holding 1 %, 10 % and all of the imports,
    and with no window at all; each with and without ``failed=True``."""
    windows: list[tuple[str, dt.datetime | None]] = [
        (f"window of {share:4.0%} of the imports (~{int(imports * share):,} runs)",
         START + dt.timedelta(seconds=imports * (1 - share)))
        for share in (0.01, 0.1, 1.0)
    ]  # fmt: skip
    windows.append((f"no window ({imports:,} runs)", None))
    for label, since in windows:
        for failed in (False, True):

            def newest(_: object, since: dt.datetime | None = since, failed: bool = failed) -> Any:
                return runs(conn, since=since, failed=failed, limit=20, schema=schema)

            seconds, found = timed(newest, [None] * 5)
            print(
                f"runs(failed={failed!s:5}), {label}: {seconds * 1000:8.1f} ms, "
                f"{len(found[0])} shown"
            )


if __name__ == "__main__":
    main()
