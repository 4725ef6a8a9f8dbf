"""The migration runner against real PostgreSQL servers: order, idempotence, locking, refusals."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import psycopg
import pytest
from psycopg import sql

from llamalogger._errors import ConfigurationError, MigrationError
from llamalogger.schema import (
    LATEST_VERSION,
    available_migrations,
    backfill_root_job_id,
    current_version,
    migrate,
)

# Every shipped version, in order (TestAvailableMigrations checks the files against it).
ALL_VERSIONS = ["0001", "0002", "0003", "0004", "0005", "0006", "0007"]


def _has_column(conn: psycopg.Connection, schema: str, column: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = 'llama_log' AND column_name = %s)",
        (schema, column),
    ).fetchone()
    assert row is not None
    return bool(row[0])


def _categories(conn: psycopg.Connection, schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT e.enumlabel FROM pg_enum AS e"
        " JOIN pg_type AS t ON t.oid = e.enumtypid"
        " JOIN pg_namespace AS n ON n.oid = t.typnamespace"
        " WHERE n.nspname = %s AND t.typname = 'llama_log_category'"
        " ORDER BY e.enumsortorder",
        (schema,),
    ).fetchall()
    return [label for (label,) in rows]


def _recorded(conn: psycopg.Connection, schema: str) -> list[str]:
    rows = conn.execute(
        sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY version").format(
            sql.Identifier(schema)
        )
    ).fetchall()
    return [version for (version,) in rows]


class TestAvailableMigrations:
    def test_files_are_sorted_by_version_and_latest_matches_the_last_file(self) -> None:
        """The shipped files load in version order and LATEST_VERSION names the last one."""
        migrations = available_migrations()
        assert [(m.version, m.name) for m in migrations] == [
            ("0001", "base"),
            ("0002", "root_job_id"),
            ("0003", "spill_replays"),
            ("0004", "root_job_id_trigger"),
            ("0005", "root_rule"),
            ("0006", "jobs"),
            ("0007", "failure_indexes"),
        ]
        assert migrations[-1].version == LATEST_VERSION
        assert all(m.sql.strip() for m in migrations)


class TestMigrate:
    def test_fresh_schema_gets_every_migration_and_a_second_run_applies_nothing(
        self, conn: psycopg.Connection, schema_name: str
    ) -> None:
        """Migrating twice is harmless: the second run applies nothing and reports no backfill."""
        assert current_version(conn, schema_name) is None

        first = migrate(conn, schema=schema_name)
        assert [m.version for m in first.applied] == ALL_VERSIONS
        assert first.version == LATEST_VERSION == "0007"
        assert str(first.backfill) == "backfill: 0 filled, 0 orphans, 0 unresolved, 0 total"

        second = migrate(conn, schema=schema_name)
        assert second.applied == ()
        assert second.version == "0007"
        assert second.backfill is None
        assert current_version(conn, schema_name) == "0007"
        assert _recorded(conn, schema_name) == ALL_VERSIONS

    def test_target_0001_is_the_schema_before_the_dual_hierarchy(
        self, conn: psycopg.Connection, schema_name: str
    ) -> None:
        """0001 has parent_job_id but no root_job_id or LINKED; migrating on adds both."""
        result = migrate(conn, schema=schema_name, target="0001")
        assert [m.version for m in result.applied] == ["0001"]
        assert result.version == "0001"
        assert result.backfill is None
        assert _has_column(conn, schema_name, "parent_job_id")
        assert not _has_column(conn, schema_name, "root_job_id")
        assert "LINKED" not in _categories(conn, schema_name)

        result = migrate(conn, schema=schema_name)
        assert [m.version for m in result.applied] == ALL_VERSIONS[1:]
        assert result.backfill is not None
        assert _has_column(conn, schema_name, "root_job_id")
        assert _categories(conn, schema_name) == [
            "CREATED",
            "UPDATED",
            "ENRICHED",
            "MATCHED",
            "SKIPPED",
            "FAILED",
            "LINKED",
            "NOTED",
        ]

    def test_migrated_table_accepts_linked_rows_with_defaults(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """A plain INSERT needs only category and message; id, logged_at and level default."""
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.llama_log (category, message, job_id, root_job_id)"
                " VALUES ('LINKED', 'artist linked to album', 'j', 'j')"
            ).format(sql.Identifier(schema))
        )
        row = conn.execute(
            sql.SQL("SELECT id, level, logged_at IS NOT NULL FROM {}.llama_log").format(
                sql.Identifier(schema)
            )
        ).fetchone()
        assert row is not None
        assert row[0] >= 1
        assert row[1:] == ("info", True)

    def test_non_autocommit_connection_is_committed_and_left_as_it_was(
        self, dsn: str, conn: psycopg.Connection, schema_name: str
    ) -> None:
        """A connection outside autocommit still gets committed migrations and keeps its mode."""
        with psycopg.connect(dsn) as other:
            result = migrate(other, schema=schema_name)
            assert result.version == "0007"
            assert other.autocommit is False
        assert current_version(conn, schema_name) == "0007"

    def test_connection_with_an_open_transaction_is_refused(
        self, dsn: str, schema_name: str
    ) -> None:
        """The runner will not commit or roll back a caller's open transaction for them."""
        with psycopg.connect(dsn) as other:
            other.execute("SELECT 1")
            with pytest.raises(MigrationError, match="transaction open"):
                migrate(other, schema=schema_name)
            other.rollback()

    def test_schema_names_needing_quotes_work(self, conn: psycopg.Connection) -> None:
        """Any valid identifier works as the schema, including quotes, spaces and capitals."""
        name = f'Llama "log" {uuid.uuid4().hex[:8]}'
        try:
            result = migrate(conn, schema=name)
            assert result.version == "0007"
            assert current_version(conn, name) == "0007"
            assert _has_column(conn, name, "root_job_id")
        finally:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))

    def test_backfill_function_uses_its_own_schema_whatever_the_callers_search_path(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """The backfill touches only the schema it was created in, even with another on the path."""
        other = f"{schema}_other"
        try:
            migrate(conn, schema=other)
            for target in (schema, other):
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.llama_log (category, message, job_id)"
                        " VALUES ('CREATED', 'm', 'j')"
                    ).format(sql.Identifier(target))
                )
                # Rows from before the trigger (0004): no root yet.
                conn.execute(
                    sql.SQL("UPDATE {}.llama_log SET root_job_id = NULL").format(
                        sql.Identifier(target)
                    )
                )
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(other)))
            report = backfill_root_job_id(conn, schema=schema)
            assert str(report) == "backfill: 1 filled, 0 orphans, 0 unresolved, 1 total"
            untouched = conn.execute(
                sql.SQL("SELECT root_job_id FROM {}.llama_log").format(sql.Identifier(other))
            ).fetchall()
            assert untouched == [(None,)]
        finally:
            conn.execute("RESET search_path")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(other)))


class TestConcurrency:
    # Each child connects, says "ready", then waits for "go" on stdin, so that all eight
    # reach migrate() together instead of one after another as they finish importing.
    CHILD = textwrap.dedent(
        """
        import sys
        import psycopg
        from llamalogger.schema import migrate

        dsn, schema = sys.argv[1], sys.argv[2]
        with psycopg.connect(dsn, autocommit=True) as conn:
            print("ready", flush=True)
            sys.stdin.readline()
            result = migrate(conn, schema=schema)
            print(" ".join(m.version for m in result.applied), flush=True)
        """
    )

    def test_eight_processes_migrating_at_once_apply_each_migration_exactly_once(
        self, dsn: str, conn: psycopg.Connection, schema_name: str
    ) -> None:
        """Workers starting together serialise on the advisory lock: every file runs once."""
        children = [
            subprocess.Popen(
                [sys.executable, "-c", self.CHILD, dsn, schema_name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        try:
            for child in children:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "ready"
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            outcomes = [child.communicate(timeout=60) for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()

        errors = [err for (_, err), child in zip(outcomes, children) if child.returncode != 0]
        assert errors == []
        applied = sorted(version for out, _ in outcomes for version in out.split())
        assert applied == ALL_VERSIONS
        assert _recorded(conn, schema_name) == ALL_VERSIONS


class TestRefusals:
    def test_unknown_target_names_the_known_versions(
        self, conn: psycopg.Connection, schema_name: str
    ) -> None:
        """Asking for a version the package does not ship fails before touching the database."""
        with pytest.raises(
            MigrationError, match="known versions: 0001, 0002, 0003, 0004, 0005, 0006, 0007"
        ):
            migrate(conn, schema=schema_name, target="0999")
        assert current_version(conn, schema_name) is None

    def test_target_below_the_current_version_is_a_refused_downgrade(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """A schema at the newest version cannot be taken back to 0001."""
        with pytest.raises(MigrationError, match="downgrades are not supported"):
            migrate(conn, schema=schema, target="0001")
        assert current_version(conn, schema) == LATEST_VERSION

    def test_schema_newer_than_the_package_is_refused(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """A database migrated by a newer llamalogger is left alone, with a hint to upgrade."""
        conn.execute(
            sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES ('9999', 'x')").format(
                sql.Identifier(schema)
            )
        )
        with pytest.raises(MigrationError, match=r"9999.*upgrade llamalogger"):
            migrate(conn, schema=schema)

    @pytest.mark.parametrize("bad", ["", "x" * 64, "é" * 32, "a\x00b", None, 7])
    def test_invalid_schema_names_are_configuration_errors(
        self, conn: psycopg.Connection, bad: object
    ) -> None:
        """Empty, over 63 bytes, NUL-bearing or non-string schema names fail early."""
        with pytest.raises(ConfigurationError):
            migrate(conn, schema=bad)  # type: ignore[arg-type]

    def test_a_63_byte_schema_name_is_accepted(
        self, conn: psycopg.Connection, schema_name: str
    ) -> None:
        """The longest name PostgreSQL keeps without truncating is fine."""
        name = schema_name + "x" * (63 - len(schema_name))
        try:
            assert migrate(conn, schema=name).version == "0007"
        finally:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
