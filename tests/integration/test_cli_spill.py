"""``llamalog status`` lists the spill files waiting per target; ``llamalog migrate`` has the
writer replay its target's files once the schema is current, and says how many events."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from fixtures.database import count_rows, drop_schema
from llamalogger import LlamaLogger
from llamalogger.cli import main


@pytest.fixture
def spill_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A spill root of this test's own: no other test's files."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    return tmp_path / "llamalogger" / "spill"


@pytest.fixture
def other_schema(dsn: str, schema_name: str) -> Iterator[str]:
    name = "o" + schema_name
    yield name
    drop_schema(dsn, name)


def _spill(dsn: str, schema: str, events: int) -> None:
    """Log ``events`` into an unmigrated schema: the writer keeps them in spill files."""
    logger = LlamaLogger(dsn, schema=schema)
    with logger.job("before-the-migration"):
        for number in range(events):
            logger.created(("track", number))
    assert logger.flush(timeout=10)  # True: on disk
    logger.close()
    assert logger.stats()["on_disk"] == events + 1  # and the job's record


def test_status_lists_waiting_files_and_migrate_replays_them(
    dsn: str,
    schema_name: str,
    other_schema: str,
    spill_root: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _spill(dsn, schema_name, 25)
    _spill(dsn, other_schema, 7)
    (mine,) = spill_root.glob(f"*-{schema_name.replace('_', '-')}-*")
    (first,) = mine.glob("*.jsonl")
    shutil.copy(first, first.with_name(first.name + ".rejected"))  # one set aside by a writer

    assert main(["status", "--dsn", dsn, "--schema", schema_name]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"llamalog: error: schema '{schema_name}' is not migrated: run `llamalog migrate` first\n"
    )
    lines = captured.out.splitlines()
    assert lines[0] == (
        "spill files waiting (the next logger of their target replays them; so does migrate):"
    )
    assert len(lines) == 3
    by_schema = {line.split(" schema ")[1].split(":")[0]: line for line in lines[1:]}
    host_port_db = lines[1].split()[0]
    assert by_schema[schema_name].startswith(f"  {host_port_db} schema {schema_name}: ")
    assert ": 1 file, 25 events, 1 job record, oldest 20" in by_schema[schema_name]
    assert by_schema[schema_name].endswith(f"; 1 set aside (unreadable or refused) in {mine}")
    assert ": 1 file, 7 events, 1 job record, oldest 20" in by_schema[other_schema]

    assert main(["migrate", "--dsn", dsn, "--schema", schema_name]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "replayed 25 events and 1 job record from spill files"
    assert count_rows(dsn, schema_name) == 25
    with psycopg.connect(dsn) as conn:
        records = conn.execute(
            sql.SQL("SELECT job_name, status FROM {}.llama_job").format(sql.Identifier(schema_name))
        ).fetchall()
    assert records == [("before-the-migration", "succeeded")]

    assert main(["status", "--dsn", dsn, "--schema", schema_name, "-n", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "events: 25 (CREATED 25)"
    # the other schema's file waits for its own target; this one's rejected copy stays
    waiting = lines[lines.index(
        "spill files waiting (the next logger of their target replays them; so does migrate):"
    ) + 1 :]  # fmt: skip
    assert len(waiting) == 2
    assert any(f"schema {other_schema}: 1 file, 7 events" in line for line in waiting)
    assert any(
        f"schema {schema_name}: 0 files, 0 events, 0 job records, oldest -; 1 set aside" in line
        for line in waiting
    )


def test_migrate_with_nothing_waiting_says_nothing_about_spill_files(
    dsn: str, schema_name: str, spill_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--dsn", dsn, "--schema", schema_name]) == 0
    assert "spill files" not in capsys.readouterr().out
    assert main(["status", "--dsn", dsn, "--schema", schema_name]) == 0
    assert "spill files: none waiting" in capsys.readouterr().out.splitlines()
