"""Migrations on a live table: same schema as before, resumable steps, bounded lock waits.

The reference for "today's schema" is the 0002 file as llamalogger 0.1.0 shipped it
(``data/legacy_0002_root_job_id.sql``), applied the way 0.1.0 applied it: one transaction,
backfill included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg import sql

from llamalogger.cli import main
from llamalogger.schema import (
    MigrationError,
    current_version,
    migrate,
    plan_migration,
)

LEGACY_0002 = (Path(__file__).parent / "data" / "legacy_0002_root_job_id.sql").read_text(
    encoding="utf-8"
)


def ident(schema: str) -> sql.Identifier:
    return sql.Identifier(schema)


def load_rows(conn: psycopg.Connection, schema: str, count: int, *, jobs_per_root: int = 7) -> None:
    """``count`` rows as 0001-era code wrote them: trees of jobs, and some rows without a job."""
    copy_sql = sql.SQL(
        "COPY {}.llama_log (category, message, job_id, parent_job_id) FROM STDIN"
    ).format(ident(schema))
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for i in range(count):
            job = i // 3
            if i % 41 == 0:
                copy.write_row(("CREATED", f"event {i}", None, None))
            elif job % jobs_per_root == 0:
                copy.write_row(("CREATED", f"event {i}", f"job-{job}", None))
            else:
                copy.write_row(("UPDATED", f"event {i}", f"job-{job}", f"job-{job - 1}"))


def roots(conn: psycopg.Connection, schema: str) -> list[tuple[int, str | None]]:
    return conn.execute(
        sql.SQL("SELECT id, root_job_id FROM {}.llama_log ORDER BY id").format(ident(schema))
    ).fetchall()


def catalog(conn: psycopg.Connection, schema: str) -> dict[str, str]:
    """Columns, types, enum values, indexes, functions and triggers of ``schema``, by name.

    Leaves out ``schema_migration_steps``, the runner's own bookkeeping, which databases
    migrated by 0.1.0 get only with their next migration.
    """
    queries = {
        "tables": "SELECT c.relname, c.relkind FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %(s)s AND c.relkind IN ('r', 'p', 'v')"
        " AND c.relname <> 'schema_migration_steps' ORDER BY 1",
        "columns": "SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),"
        " a.attnotnull, a.attidentity, pg_get_expr(d.adbin, d.adrelid)"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE n.nspname = %(s)s AND a.attnum > 0 AND NOT a.attisdropped"
        " AND c.relkind = 'r' AND c.relname <> 'schema_migration_steps' ORDER BY 1, 2",
        "enums": "SELECT t.typname, e.enumlabel FROM pg_enum e"
        " JOIN pg_type t ON t.oid = e.enumtypid"
        " JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = %(s)s"
        " ORDER BY 1, e.enumsortorder",
        "indexes": "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(s)s"
        " AND c.relname <> 'schema_migration_steps_pkey' ORDER BY 1",
        "functions": "SELECT p.proname, pg_get_function_arguments(p.oid),"
        " pg_get_function_result(p.oid), p.prosrc, p.proconfig, p.provolatile, p.prolang"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %(s)s ORDER BY 1",
        "triggers": "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t"
        " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %(s)s AND NOT t.tgisinternal ORDER BY 1",
    }
    return {
        name: repr(conn.execute(query, {"s": schema}).fetchall()).replace(schema, "<schema>")
        for name, query in queries.items()
    }


def migrate_the_old_way(conn: psycopg.Connection, schema: str) -> None:
    """0001, then 0002 as 0.1.0 applied it: one transaction, backfill included."""
    migrate(conn, schema=schema, target="0001")
    conn.execute(sql.SQL("DROP TABLE {}.schema_migration_steps").format(ident(schema)))
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident(schema)))
        conn.execute(LEGACY_0002)
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.schema_migrations (version, name) VALUES ('0002', 'root_job_id')"
            ).format(ident(schema))
        )
        conn.execute("SELECT * FROM llama_log_backfill_root_job_id()")


@pytest.fixture
def other_schema(dsn: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(name)))


class TestSameSchemaAsBefore:
    @pytest.mark.parametrize("target", ["0002", "0004", "0005", "0006", "0007"])
    def test_online_steps_end_in_the_schema_the_one_transaction_0002_made(
        self, conn: psycopg.Connection, schema_name: str, other_schema: str, target: str
    ) -> None:
        """Columns, types, enum values, indexes, functions and triggers are the same whether
        0002 ran as online steps or as 0.1.0's single transaction, and so are the roots."""
        for schema in (schema_name, other_schema):
            migrate(conn, schema=schema, target="0001")
            load_rows(conn, schema, 500)
        migrate(conn, schema=schema_name, target=target)
        migrate_the_old_way(conn, other_schema)
        if target != "0002":
            migrate(conn, schema=other_schema, target=target)

        assert catalog(conn, schema_name) == catalog(conn, other_schema)
        assert roots(conn, schema_name) == roots(conn, other_schema)

    def test_a_database_already_at_0003_redoes_nothing_of_0002(
        self, conn: psycopg.Connection, schema_name: str
    ) -> None:
        """Only 0004 and 0005 run on a database that 0.1.0 migrated; 0002 is not started again."""
        migrate_the_old_way(conn, schema_name)
        migrate(conn, schema=schema_name, target="0003")
        plan = plan_migration(conn, schema=schema_name)
        assert {step.version for step in plan.steps} == {"0004", "0005", "0006", "0007"}

        result = migrate(conn, schema=schema_name)

        assert [m.version for m in result.applied] == ["0004", "0005", "0006", "0007"]
        steps = conn.execute(
            sql.SQL("SELECT DISTINCT version FROM {}.schema_migration_steps").format(
                ident(schema_name)
            )
        ).fetchall()
        assert sorted(steps) == [
            ("0003",),
            ("0004",),
            ("0005",),
            ("0006",),
            ("0007",),
        ]  # 0003 was applied by this runner

    def test_late_rows_of_0001_era_code_are_filled_by_0004_on_an_old_database(
        self, conn: psycopg.Connection, schema_name: str
    ) -> None:
        """Rows written without a root after 0.1.0's 0002 (the 51-of-51 case) get theirs in 0004."""
        migrate_the_old_way(conn, schema_name)
        migrate(conn, schema=schema_name, target="0003")
        before = len(roots(conn, schema_name))
        load_rows(conn, schema_name, 60)  # old code: no root_job_id column in its INSERTs
        late = [root for row_id, root in roots(conn, schema_name) if row_id > before]
        assert late == [None] * 60

        result = migrate(conn, schema=schema_name)

        assert result.backfill is not None
        with_job = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM {}.llama_log WHERE id > %s AND job_id IS NOT NULL"
            ).format(ident(schema_name)),
            (before,),
        ).fetchone()
        assert with_job is not None
        assert result.backfill.filled == with_job[0] > 0
        assert result.backfill.unresolved == 0


class TestResume:
    def test_a_backfill_stopped_after_some_batches_resumes_and_ends_in_the_same_rows(
        self, conn: psycopg.Connection, schema_name: str, other_schema: str
    ) -> None:
        """Batches commit with their progress: a run stopped midway leaves filled rows and
        a resume point, and the next run fills only the rest, ending as an uninterrupted run."""

        class Stop(Exception):
            pass

        batches = 0

        def stop_after_three(label: str, done: int, total: int) -> None:
            nonlocal batches
            batches += 1
            if batches == 3:
                raise Stop

        for schema in (schema_name, other_schema):
            migrate(conn, schema=schema, target="0001")
            load_rows(conn, schema, 8000)
        migrate(conn, schema=other_schema)

        with pytest.raises(Stop):
            migrate(conn, schema=schema_name, batch_seconds=0.0001, progress=stop_after_three)
        assert current_version(conn, schema_name) == "0001"
        resume = conn.execute(
            sql.SQL(
                "SELECT resume_after FROM {}.schema_migration_steps"
                " WHERE version = '0002' AND step = 'backfill_root_job_id'"
            ).format(ident(schema_name))
        ).fetchone()
        assert resume is not None
        assert resume[0] > 0
        filled_before = sum(1 for _, root in roots(conn, schema_name) if root is not None)
        assert filled_before > 0

        result = migrate(conn, schema=schema_name)

        assert result.backfill is not None
        reference = roots(conn, other_schema)
        assert roots(conn, schema_name) == reference
        assert result.backfill.filled == sum(1 for _, r in reference if r) - filled_before
        assert catalog(conn, schema_name) == catalog(conn, other_schema)

    def test_an_invalid_index_left_by_a_killed_build_is_rebuilt(
        self, conn: psycopg.Connection, schema_name: str, other_schema: str
    ) -> None:
        """A failed CREATE INDEX CONCURRENTLY leaves an invalid index; the runner drops it and
        builds it again instead of keeping it because of IF NOT EXISTS."""
        for schema in (schema_name, other_schema):
            migrate(conn, schema=schema, target="0001")
            load_rows(conn, schema, 300)
        migrate(conn, schema=other_schema)
        table = sql.SQL("{}.llama_log").format(ident(schema_name))
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN root_job_id varchar(100)").format(table))
        conn.execute(sql.SQL("UPDATE {} SET root_job_id = 'same'").format(table))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                sql.SQL(
                    "CREATE UNIQUE INDEX CONCURRENTLY llama_log_root_job_id_idx ON {} (root_job_id)"
                ).format(table)
            )
        conn.execute(sql.SQL("UPDATE {} SET root_job_id = NULL").format(table))
        assert "False" in catalog(conn, schema_name)["indexes"]  # indisvalid

        migrate(conn, schema=schema_name)

        assert catalog(conn, schema_name) == catalog(conn, other_schema)
        assert roots(conn, schema_name) == roots(conn, other_schema)


class TestLocks:
    def test_a_busy_table_makes_the_step_give_up_whole_without_blocking_writers(
        self, dsn: str, conn: psycopg.Connection, schema_name: str
    ) -> None:
        """While a transaction holds llama_log, the ALTER waits lock_timeout at a time, then
        gives up: a clear MigrationError, the column not added, 0002 not recorded, and a
        concurrent INSERT never waits much longer than one lock_timeout."""
        migrate(conn, schema=schema_name, target="0001")
        table = sql.SQL("{}.llama_log").format(ident(schema_name))
        stop = threading.Event()
        waits: list[float] = []

        def insert_every_10_ms() -> None:
            with psycopg.connect(dsn, autocommit=True) as writer:
                while not stop.is_set():
                    began = time.monotonic()
                    writer.execute(
                        sql.SQL(
                            "INSERT INTO {} (category, message) VALUES ('CREATED', 'w')"
                        ).format(table)
                    )
                    waits.append(time.monotonic() - began)
                    time.sleep(0.01)

        with psycopg.connect(dsn) as holder:
            holder.execute(sql.SQL("SELECT FROM {} LIMIT 1").format(table))  # ACCESS SHARE held
            writer = threading.Thread(target=insert_every_10_ms)
            writer.start()
            try:
                with pytest.raises(MigrationError, match=r"step root_job_id_column.*Nothing of"):
                    migrate(conn, schema=schema_name, lock_timeout=0.1, lock_retries=3)
            finally:
                stop.set()
                writer.join()
            holder.rollback()

        assert current_version(conn, schema_name) == "0001"
        column = conn.execute(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_schema = %s AND column_name = 'root_job_id'",
            (schema_name,),
        ).fetchone()
        assert column == (0,)
        assert waits
        assert max(waits) < 1.0  # lock_timeout is 0.1 s; the margin is for a busy machine
        assert migrate(conn, schema=schema_name).version == "0007"

    def test_cli_exits_1_with_one_line_naming_the_holder_when_the_lock_is_never_granted(
        self,
        dsn: str,
        conn: psycopg.Connection,
        schema_name: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        migrate(conn, schema=schema_name, target="0001")
        with psycopg.connect(dsn) as holder:
            holder.execute(sql.SQL("SELECT FROM {}.llama_log").format(ident(schema_name)))
            holder_pid = holder.info.backend_pid
            code = main(
                [
                    *("migrate", "--dsn", dsn, "--schema", schema_name),
                    *("--lock-timeout", "0.05", "--lock-retries", "1"),
                ]
            )
            holder.rollback()
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1
        assert len(err) == 1
        assert err[0].startswith("llamalog: error: migration 0002_root_job_id, step ")
        assert f"llama_log was locked by server process {holder_pid} " in err[0]
        assert "run `llamalog migrate` again" in err[0]

    def test_a_second_migrate_waits_a_bounded_time_then_says_who_is_busy(
        self,
        dsn: str,
        conn: psycopg.Connection,
        schema_name: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Two migrates of one schema: the second waits up to `wait`, then exits naming the
        first one's server process, without touching the schema."""
        with psycopg.connect(dsn, autocommit=True) as first:
            first.execute(
                "SELECT pg_advisory_lock(hashtext(%s))", ("llamalogger.migrate:" + schema_name,)
            )
            pid = first.info.backend_pid
            began = time.monotonic()
            with pytest.raises(MigrationError, match=rf"another .* \(server process {pid}\)"):
                migrate(conn, schema=schema_name, wait=0.3)
            assert 0.25 < time.monotonic() - began < 5
            assert main(["migrate", "--dsn", dsn, "--schema", schema_name, "--wait", "0.1"]) == 1
            assert "another `llamalog migrate` is running" in capsys.readouterr().err
        assert current_version(conn, schema_name) is None


class TestDryRun:
    def test_dry_run_lists_steps_locks_and_rows_and_changes_nothing(
        self,
        dsn: str,
        conn: psycopg.Connection,
        schema_name: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        migrate(conn, schema=schema_name, target="0001")
        load_rows(conn, schema_name, 123)
        assert main(["migrate", "--dsn", dsn, "--schema", schema_name, "--dry-run"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"schema {schema_name}: version 0001, target 0007, 16 steps to run"
        by_step = {line.split(": ", 1)[1].split(" (")[0]: line for line in lines[1:]}
        assert "ACCESS EXCLUSIVE" in by_step["root_job_id_column"]
        assert by_step["root_job_id_column"].endswith("rows: 0")
        assert "SHARE UPDATE EXCLUSIVE" in by_step["root_job_id_index"]
        assert by_step["root_job_id_index"].endswith("rows: 123")
        with_job = 123 - len(range(0, 123, 41))
        assert by_step["backfill_root_job_id"].endswith(f"rows: {with_job}")
        assert current_version(conn, schema_name) == "0001"
        assert "root_job_id" not in catalog(conn, schema_name)["columns"]

    def test_dry_run_of_an_up_to_date_schema_has_no_steps(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        plan = plan_migration(conn, schema=schema)
        assert plan.steps == ()
        assert str(plan) == f"schema {schema}: version 0007, target 0007, 0 steps to run"


KILL_ROWS = 6000
# Small batches, so that a kill lands in the backfill often and there is progress to resume.
_CLI = [sys.executable, "-m", "llamalogger.cli", "migrate", "--batch-seconds", "0.002"]


@attrs.frozen
class Uninterrupted:
    roots: list[tuple[int, str | None]]
    catalog: dict[str, str]
    recorded: list[tuple[str]]
    seconds: float


def recorded(conn: psycopg.Connection, schema: str) -> list[tuple[str]]:
    return conn.execute(
        sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY 1").format(ident(schema))
    ).fetchall()


def start_migrate(dsn: str, schema: str, conn: psycopg.Connection) -> subprocess.Popen[bytes]:
    """`llamalog migrate` in a child process, returned once its session is on the server."""
    name = f"llamalog-kill-test-{schema}"
    child = subprocess.Popen(
        [*_CLI, "--dsn", dsn, "--schema", schema],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PGAPPNAME": name},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and child.poll() is None:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
        if row and row[0]:
            break
        time.sleep(0.002)  # polling the server for the child's session, not waiting on a writer
    return child


@pytest.fixture
def uninterrupted(dsn: str, conn: psycopg.Connection, other_schema: str) -> Uninterrupted:
    """An uninterrupted `llamalog migrate` of the rows the kill test uses, and how long it
    ran once connected."""
    migrate(conn, schema=other_schema, target="0001")
    load_rows(conn, other_schema, KILL_ROWS)
    child = start_migrate(dsn, other_schema, conn)
    began = time.monotonic()
    assert child.wait(timeout=120) == 0
    seconds = time.monotonic() - began
    return Uninterrupted(
        roots(conn, other_schema),
        catalog(conn, other_schema),
        recorded(conn, other_schema),
        seconds,
    )


class TestKilled:
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(moment=st.floats(0.0, 1.0))
    def test_a_migrate_killed_at_any_moment_ends_after_a_rerun_as_an_uninterrupted_one(
        self, dsn: str, conn: psycopg.Connection, uninterrupted: Uninterrupted, moment: float
    ) -> None:
        """SIGKILL `llamalog migrate` at a moment hypothesis picks (a share of how long an
        uninterrupted run takes once connected), run it again: the same rows, the
        same catalog, the same versions recorded."""
        schema = f"k_{uuid.uuid4().hex[:12]}"
        try:
            migrate(conn, schema=schema, target="0001")
            load_rows(conn, schema, KILL_ROWS)
            child = start_migrate(dsn, schema, conn)
            time.sleep(moment * uninterrupted.seconds)
            os.kill(child.pid, signal.SIGKILL)
            child.wait()

            done = conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM {}.schema_migration_steps WHERE done_at IS NOT NULL"
                ).format(ident(schema))
            ).fetchone()
            event(f"killed after {done[0] if done else 0} steps")

            result = migrate(conn, schema=schema)

            assert result.version == "0007"
            assert roots(conn, schema) == uninterrupted.roots
            assert catalog(conn, schema) == uninterrupted.catalog
            assert recorded(conn, schema) == uninterrupted.recorded
        finally:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(schema)))
