"""The root_job_id backfill (docs/design.md section 4) against real PostgreSQL servers.

Every test compares the database with ``expected_roots``, a deliberately naive reference that
walks up from each job in Python, while the SQL function descends from the roots.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence

import psycopg
from attrs import astuple
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from llamalogger.schema import BackfillReport, backfill_root_job_id, migrate
from llamalogger.schema._backfill import backfill_batches

# (job_id, parent_job_id) of one row, in insert order
Row = tuple[str | None, str | None]
# (id, job_id, parent_job_id, root_job_id) as read back
Stored = tuple[int, str | None, str | None, str | None]

CATEGORIES = ("CREATED", "UPDATED", "ENRICHED", "MATCHED", "SKIPPED", "FAILED")


def copy_rows(conn: psycopg.Connection, schema: str, rows: Iterable[Row]) -> None:
    """Append rows with COPY, as an import or another writer would; ids follow the row order.

    On a schema at 0004 or later the insert trigger gives them their roots as they arrive.
    """
    copy_sql = sql.SQL(
        "COPY {}.llama_log (category, message, job_id, parent_job_id, job_name) FROM STDIN"
    ).format(sql.Identifier(schema))
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for i, (job, parent) in enumerate(rows):
            copy.write_row((CATEGORIES[i % len(CATEGORIES)], f"event {i}", job, parent, "test"))


def load(conn: psycopg.Connection, schema: str, rows: Iterable[Row]) -> None:
    """Append rows with COPY and leave every root NULL, as rows from before 0002 would be."""
    copy_rows(conn, schema, rows)
    conn.execute(
        sql.SQL("UPDATE {}.llama_log SET root_job_id = NULL").format(sql.Identifier(schema))
    )


def stored(conn: psycopg.Connection, schema: str) -> list[Stored]:
    query = sql.SQL(
        "SELECT id, job_id, parent_job_id, root_job_id FROM {}.llama_log ORDER BY id"
    ).format(sql.Identifier(schema))
    return conn.execute(query).fetchall()


def expected_roots(rows: Sequence[Stored]) -> dict[str, str | None]:
    """The root of every job by the rules, walking up; None for jobs on or below a cycle."""
    parent_of: dict[str, str | None] = {}
    for _, job, parent, _ in sorted(rows):
        if job is not None:
            parent_of.setdefault(job, parent)  # the earliest row decides
    roots: dict[str, str | None] = {}
    for job in parent_of:
        seen: set[str] = set()
        current = job
        root: str | None
        while True:
            if current in seen:
                root = None
                break
            seen.add(current)
            if current not in parent_of:  # a parent with no rows of its own
                root = current
                break
            parent = parent_of[current]
            if parent is None:
                root = current
                break
            current = parent
        roots[job] = root
    return roots


def expected_report(rows: Sequence[Stored]) -> BackfillReport:
    """The report for rows that all had a NULL root before the backfill."""
    roots = expected_roots(rows)
    filled = sum(1 for _, job, _, _ in rows if job is not None and roots[job] is not None)
    orphans = sum(1 for _, job, _, _ in rows if job is None)
    return BackfillReport(filled, orphans, len(rows) - filled - orphans, len(rows))


def assert_roots_as_expected(rows: Sequence[Stored]) -> None:
    roots = expected_roots(rows)
    actual = [(row_id, root) for row_id, _, _, root in rows]
    wanted = [(row_id, None if job is None else roots[job]) for row_id, job, _, _ in rows]
    assert actual == wanted


def backfill(conn: psycopg.Connection, schema: str, rows: Iterable[Row]) -> BackfillReport:
    load(conn, schema, rows)
    return backfill_root_job_id(conn, schema=schema)


def reference_rows() -> list[Row]:
    """4052 rows: 4010 in a deterministic forest of jobs of various depths, 42 without a job."""
    rng = random.Random(4052)
    jobs: list[tuple[str, str | None]] = []
    rows: list[Row] = []
    remaining = 4010
    while remaining:
        job = f"job-{len(jobs):04d}"
        draw = rng.random()
        if not jobs or draw < 0.12:
            parent = None
        elif draw < 0.15:
            parent = f"upstream-{len(jobs)}"  # a parent known only by id, from another system
        elif draw < 0.6:
            parent = rng.choice(jobs[-4:])[0]  # recent jobs: grows deep chains
        else:
            parent = rng.choice(jobs)[0]  # anyone: grows wide trees
        jobs.append((job, parent))
        count = min(remaining, rng.randint(1, 19))
        rows.extend([(job, parent)] * count)
        remaining -= count
    rows.extend([(None, None)] * 42)
    rng.shuffle(rows)  # children's rows may come before their parents', as in real logs
    return rows


def depth(rows: Sequence[Stored], job: str) -> int:
    """How many parents lie above ``job`` (acyclic rows only)."""
    parents = {j: p for _, j, p, _ in rows if j is not None}
    steps = 0
    parent = parents.get(job)
    while parent is not None:
        steps += 1
        parent = parents.get(parent)
    return steps


class TestReferenceSet:
    def test_reference_set_fills_4010_with_42_orphans_through_migrate(
        self, conn: psycopg.Connection, schema_name: str
    ) -> None:
        """Migrating a 0001 schema holding the reference set reports the documented line."""
        migrate(conn, schema=schema_name, target="0001")
        copy_rows(conn, schema_name, reference_rows())

        result = migrate(conn, schema=schema_name)

        assert str(result.backfill) == "backfill: 4010 filled, 42 orphans, 0 unresolved, 4052 total"
        rows = stored(conn, schema_name)
        assert_roots_as_expected(rows)
        # The forest really has depth and roots from all three rules.
        assert max(depth(rows, job) for _, job, _, _ in rows if job is not None) >= 8
        roots = {root for _, _, _, root in rows}
        assert any(root is not None and root.startswith("upstream-") for root in roots)

    def test_every_row_of_a_job_gets_the_same_root(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """Invariant 7: one job, one root, however its rows are interleaved with others."""
        backfill(conn, schema, reference_rows())
        per_job: dict[str, set[str | None]] = {}
        for _, job, _, root in stored(conn, schema):
            if job is not None:
                per_job.setdefault(job, set()).add(root)
        assert all(len(roots) == 1 for roots in per_job.values())

    def test_second_backfill_fills_nothing(self, conn: psycopg.Connection, schema: str) -> None:
        """Only NULL roots are filled, so running the backfill again changes nothing."""
        backfill(conn, schema, reference_rows())
        before = stored(conn, schema)
        again = backfill_root_job_id(conn, schema=schema)
        assert str(again) == "backfill: 0 filled, 42 orphans, 0 unresolved, 4052 total"
        assert stored(conn, schema) == before


class TestRules:
    def test_chain_25_jobs_deep_fills_to_its_top(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """There is no depth limit: every job of a 25-deep chain gets the topmost job as root."""
        chain = [f"depth-{i:02d}" for i in range(25)]
        rows: list[Row] = [(chain[0], None)]
        rows += [(job, parent) for parent, job in itertools.pairwise(chain)]
        report = backfill(conn, schema, reversed(rows * 2))  # deepest first
        assert str(report) == "backfill: 50 filled, 0 orphans, 0 unresolved, 50 total"
        assert {root for _, _, _, root in stored(conn, schema)} == {"depth-00"}

    def test_cycles_and_jobs_below_them_stay_null_while_a_healthy_tree_fills(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """Self-parents, 2- and 3-cycles and their descendants are unresolved; the rest fills."""
        healthy: list[Row] = [("root", None), ("child", "root"), ("grandchild", "child")]
        cyclic: list[Row] = [
            ("self", "self"),
            ("two-a", "two-b"),
            ("two-b", "two-a"),
            ("three-a", "three-b"),
            ("three-b", "three-c"),
            ("three-c", "three-a"),
            ("below", "three-b"),
            ("further-below", "below"),
        ]
        report = backfill(conn, schema, (healthy + cyclic) * 3 + [(None, None)])

        assert str(report) == "backfill: 9 filled, 1 orphans, 24 unresolved, 34 total"
        rows = stored(conn, schema)
        assert_roots_as_expected(rows)
        roots = {job: root for _, job, _, root in rows if job is not None}
        assert roots == {
            "root": "root",
            "child": "root",
            "grandchild": "root",
            **{job: None for job, _ in cyclic},
        }

    def test_parent_job_without_rows_becomes_the_root(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """A parent known only by id is the topmost ancestor anyone knows of."""
        backfill(conn, schema, [("child", "elsewhere"), ("grandchild", "child")])
        assert [root for *_, root in stored(conn, schema)] == ["elsewhere", "elsewhere"]

    def test_the_earliest_row_decides_a_jobs_parent(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """When a job's rows disagree, the parent of its lowest id wins, for all of its rows."""
        rows: list[Row] = [
            ("first-parent", None),
            ("second-parent", None),
            ("job", "first-parent"),
            ("job", "second-parent"),
            ("job", None),
            ("rootish", None),  # earliest says root, later rows claim a parent
            ("rootish", "first-parent"),
        ]
        backfill(conn, schema, rows)
        roots = [(job, root) for _, job, _, root in stored(conn, schema)]
        assert roots == [
            ("first-parent", "first-parent"),
            ("second-parent", "second-parent"),
            ("job", "first-parent"),
            ("job", "first-parent"),
            ("job", "first-parent"),
            ("rootish", "rootish"),
            ("rootish", "rootish"),
        ]

    def test_rows_without_a_job_stay_null_as_orphans(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """Rows from before job tracking keep a NULL root and are counted as orphans."""
        report = backfill(conn, schema, [(None, None), (None, "stray-parent"), ("j", None)])
        assert str(report) == "backfill: 1 filled, 2 orphans, 0 unresolved, 3 total"
        assert [root for *_, root in stored(conn, schema)] == [None, None, "j"]

    def test_a_root_already_stored_is_kept_and_shared_by_the_jobs_other_rows(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """The backfill fills NULLs only, and a job with a stored root (the writer's) keeps one
        root for all its rows (invariant 7), as the insert trigger gives it to late rows."""
        load(conn, schema, [("j", None), ("j", None), ("child", "j")])
        conn.execute(
            sql.SQL("UPDATE {}.llama_log SET root_job_id = 'set-by-writer' WHERE id = 1").format(
                sql.Identifier(schema)
            )
        )
        report = backfill_root_job_id(conn, schema=schema)
        assert str(report) == "backfill: 2 filled, 0 orphans, 0 unresolved, 3 total"
        assert [root for *_, root in stored(conn, schema)] == ["set-by-writer"] * 3

    def test_awkward_job_ids_round_trip(self, conn: psycopg.Connection, schema: str) -> None:
        """Ids of exactly 100 characters, quotes, backslashes, tabs and unicode are just ids."""
        longest = "r" * 100
        unicode_longest = "ジ" * 99 + "🎵"
        quoted = 'it\'s a "job"'
        slashed = "C:\\jobs\\new\\t"
        rows: list[Row] = [
            (longest, None),
            (quoted, longest),
            (slashed, quoted),
            ("tab\there", slashed),
            ("ünïcødé-ジョブ-🎵", "tab\there"),
            (unicode_longest, "ünïcødé-ジョブ-🎵"),
            ("child-of-unknown", "über'\\\"-🎵"),
        ]
        report = backfill(conn, schema, rows)
        assert str(report) == "backfill: 7 filled, 0 orphans, 0 unresolved, 7 total"
        stored_rows = stored(conn, schema)
        assert [job for _, job, _, _ in stored_rows] == [job for job, _ in rows]
        assert [root for *_, root in stored_rows] == [longest] * 6 + ["über'\\\"-🎵"]


JOB_IDS = ["a", "b", "c", "d", "e", "f", "g", "h"]


class TestRandomForests:
    @settings(
        max_examples=100,
        deadline=None,
        # Each example truncates the table first, so sharing the schema fixture is safe.
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        rows=st.lists(
            st.tuples(
                st.none() | st.sampled_from(JOB_IDS),
                st.none() | st.sampled_from([*JOB_IDS, "outside-1", "outside-2"]),
            ),
            max_size=40,
        )
    )
    def test_backfill_agrees_with_walking_up_on_any_graph(
        self, conn: psycopg.Connection, schema: str, rows: list[Row]
    ) -> None:
        """For any rows, cycles and all, the SQL backfill gives each job the root found by
        walking up its earliest rows' parents, and counts filled, orphans and unresolved alike."""
        conn.execute(
            sql.SQL("TRUNCATE {}.llama_log RESTART IDENTITY").format(sql.Identifier(schema))
        )
        report = backfill(conn, schema, rows)
        after = stored(conn, schema)
        assert_roots_as_expected(after)
        assert report == expected_report(after)


class TestRowsLeftToFill:
    """The map covers only the jobs of the rows left to fill and their ancestors."""

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        rows=st.lists(
            st.tuples(
                st.none() | st.sampled_from(JOB_IDS),
                st.none() | st.sampled_from([*JOB_IDS, "outside-1", "outside-2"]),
            ),
            max_size=40,
        ),
        keep=st.sets(st.sampled_from(JOB_IDS)),
    )
    def test_filling_what_is_left_agrees_with_filling_everything(
        self, conn: psycopg.Connection, schema: str, rows: list[Row], keep: set[str]
    ) -> None:
        """For any rows, cycles and all, and any jobs already filled, walking up from the NULL
        rows' jobs fills them as a backfill of every row would."""
        conn.execute(
            sql.SQL("TRUNCATE {}.llama_log RESTART IDENTITY").format(sql.Identifier(schema))
        )
        load(conn, schema, rows)
        backfill_batches(conn, schema)
        conn.execute(
            sql.SQL("UPDATE {}.llama_log SET root_job_id = NULL WHERE NOT job_id = ANY(%s)").format(
                sql.Identifier(schema)
            ),
            (sorted(keep),),
        )
        report = backfill_batches(conn, schema)
        after = stored(conn, schema)
        assert_roots_as_expected(after)
        assert (report.orphans, report.unresolved, report.total) == astuple(expected_report(after))[
            1:
        ]

    def test_late_rows_in_a_filled_table_get_the_roots_of_their_jobs(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """The reference set filled, then a few jobs' roots wiped: only they are filled again,
        with the roots they had."""
        backfill(conn, schema, reference_rows())
        before = stored(conn, schema)
        wiped = conn.execute(
            sql.SQL(
                "UPDATE {}.llama_log SET root_job_id = NULL"
                " WHERE job_id IN ('job-0007', 'job-0100', 'job-0321')"
            ).format(sql.Identifier(schema))
        ).rowcount
        report = backfill_root_job_id(conn, schema=schema)
        assert str(report) == f"backfill: {wiped} filled, 42 orphans, 0 unresolved, 4052 total"
        assert stored(conn, schema) == before


class TestOneRule:
    """The rule is one SQL function; the backfill, its SQL twin and the trigger all call it."""

    def test_the_backfill_uses_the_text_of_the_schemas_own_function(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """The session copy the batched backfill makes is the migration's function, word for
        word, so the two cannot drift apart."""
        backfill(conn, schema, [("j", None)])
        query = (
            "SELECT n.nspname LIKE 'pg_temp%%', p.prosrc FROM pg_catalog.pg_proc AS p"
            " JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace"
            " WHERE p.proname = 'llama_log_job_roots' AND (n.nspname = %s"
            " OR n.oid = pg_catalog.pg_my_temp_schema())"
        )
        bodies = dict(conn.execute(query, (schema,)).fetchall())
        assert set(bodies) == {True, False}
        assert bodies[True] == bodies[False]

    def test_the_trigger_and_the_sql_backfill_function_call_the_rule(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """Neither function carries a copy of the rule: each body names llama_log_job_roots."""
        query = (
            "SELECT p.proname, p.prosrc FROM pg_catalog.pg_proc AS p"
            " JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace"
            " WHERE n.nspname = %s AND p.proname LIKE 'llama_log%%root_job_id'"
        )
        bodies = dict(conn.execute(query, (schema,)).fetchall())
        assert set(bodies) == {"llama_log_fill_root_job_id", "llama_log_backfill_root_job_id"}
        for body in bodies.values():
            assert "llama_log_job_roots(" in body
            assert "RECURSIVE" not in body

    def test_the_sql_backfill_function_gives_the_reference_figures(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """llama_log_backfill_root_job_id(), kept for scripts, fills as the batched backfill."""
        load(conn, schema, reference_rows())
        row = conn.execute(
            sql.SQL("SELECT * FROM {}.llama_log_backfill_root_job_id()").format(
                sql.Identifier(schema)
            )
        ).fetchone()
        assert row == (4010, 42, 0, 4052)
        assert_roots_as_expected(stored(conn, schema))


def test_backfill_report_line_format() -> None:
    """The report line is the one the CLI prints after the root-job migration."""
    assert str(BackfillReport(3, 2, 1, 6)) == "backfill: 3 filled, 2 orphans, 1 unresolved, 6 total"


def natural_order(rows: list[Row]) -> list[Row]:
    """``rows`` reordered so that a job's first row comes after its parent's first row (when
    the parent has rows at all), as a logger writes them; the order within a job is kept."""
    parent_of: dict[str, str | None] = {}
    for job, parent in rows:
        if job is not None:
            parent_of.setdefault(job, parent)
    placed: list[str] = []
    remaining = list(parent_of)
    while remaining:
        ready = [
            job
            for job in remaining
            if parent_of[job] is None or parent_of[job] not in parent_of or parent_of[job] in placed
        ]
        if not ready:  # a cycle: what is left can go in any order
            ready = remaining[:]
        placed.extend(ready)
        remaining = [job for job in remaining if job not in ready]
    rank = {job: index for index, job in enumerate(placed)}
    return sorted(rows, key=lambda row: -1 if row[0] is None else rank[row[0]])


@st.composite
def acyclic_rows(draw: st.DrawFn) -> Row:
    """A row whose parent, if a job of JOB_IDS, comes before its own job in JOB_IDS."""
    index = draw(st.integers(-1, len(JOB_IDS) - 1))
    if index < 0:
        return (None, draw(st.none() | st.just("outside-1")))
    parents = [None, "outside-1", "outside-2", *JOB_IDS[:index]]
    return (JOB_IDS[index], draw(st.sampled_from(parents)))


class TestInsertTrigger:
    """0004's trigger gives rows that arrive without a root the one the rules give them."""

    def test_rows_written_by_0001_era_code_get_their_root_on_insert(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """Root, child, grandchild, child of a parent without rows, orphan: as the backfill."""
        copy_rows(
            conn,
            schema,
            [
                ("root", None),
                ("child", "root"),
                ("grandchild", "child"),
                ("grandchild", "child"),
                ("from-elsewhere", "upstream"),
                (None, None),
            ],
        )
        assert [root for *_, root in stored(conn, schema)] == [
            "root",
            "root",
            "root",
            "root",
            "upstream",
            None,
        ]

    def test_a_root_that_comes_with_the_row_is_kept(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """The WHEN condition skips rows that bring their root: nothing is recomputed."""
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.llama_log (category, message, job_id, parent_job_id, root_job_id)"
                " VALUES ('CREATED', 'm', 'j', 'p', 'given')"
            ).format(sql.Identifier(schema))
        )
        assert [root for *_, root in stored(conn, schema)] == ["given"]

    def test_a_later_row_of_a_job_shares_the_root_its_earlier_rows_have(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """Invariant 7 for late rows: a job's rows keep one root even when the rules, applied
        to the rows as they are now, would say otherwise (its parent logged only later)."""
        copy_rows(conn, schema, [("job", "parent")])  # parent has no rows: it is the root
        copy_rows(conn, schema, [("parent", "grandparent"), ("job", "parent")])
        assert [(job, root) for _, job, _, root in stored(conn, schema)] == [
            ("job", "parent"),
            ("parent", "grandparent"),
            ("job", "parent"),
        ]

    def test_a_cycle_leaves_the_row_null_like_the_backfill(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        copy_rows(conn, schema, [("self", "self"), ("a", "b"), ("b", "a"), ("a", "b")])
        assert [(job, root) for _, job, _, root in stored(conn, schema)] == [
            ("self", None),
            ("a", "b"),  # when a arrived, b had no rows: b was the root
            ("b", "b"),
            ("a", "b"),
        ]

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(rows=st.lists(acyclic_rows(), max_size=40))
    def test_rows_inserted_in_the_order_a_logger_writes_them_get_the_backfills_roots(
        self, conn: psycopg.Connection, schema: str, rows: list[Row]
    ) -> None:
        """When each job's first row comes after its parent's (as a logger writes them, and a
        logger writes no cycles), the trigger fills every row exactly as the backfill fills
        the same rows afterwards."""
        conn.execute(
            sql.SQL("TRUNCATE {}.llama_log RESTART IDENTITY").format(sql.Identifier(schema))
        )
        copy_rows(conn, schema, natural_order(rows))
        assert_roots_as_expected(stored(conn, schema))
