"""The replay of spill files against a real server: files stream into one COPY, several to a
transaction with their replay marks, and whatever fails part way is written again whole, once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from fixtures.database import rows
from fixtures.waiting import wait_until
from llamalogger import LlamaLogger
from llamalogger._pipeline.sink import BatchSink
from llamalogger._pipeline.spill import SpillDir, SpillFile

# A job record's row as the writer spills it: the JOB marker second, details last.
JOB_ROW = (2_000_000, "JOB", "failed", "KeyError: 'x'", "j2", "j1", "j1", "enrich", "track",
           "9", "KeyError", 1_000_000, 2, 4242, "worker-1", b'\x01{"queue": "q"}')  # fmt: skip


def event(number: int, message: str | None = None) -> tuple[object, ...]:
    return (number, "CREATED", "info", message or f"event {number}", None, None, None, None,
            "track", str(number), None, None, b'\x01{"n": %d}' % number)  # fmt: skip


def spill_files(
    dsn: str, schema: str, path: Path, batches: list[list[tuple[object, ...]]]
) -> list[SpillFile]:
    """Files as an outage leaves them for ``dsn`` and ``schema``, one per batch, in order."""
    spill = SpillDir(path, BatchSink(conninfo=dsn, schema=schema).target(), 1 << 30)
    return [spill.write(batch, taken_ns) for taken_ns, batch in enumerate(batches, start=1)]


def events(first: int, count: int) -> list[tuple[object, ...]]:
    return [event(number) for number in range(first, first + count)]


def replay(dsn: str, schema: str, path: Path, events: int) -> dict[str, int]:
    """A logger of the files' target replays them (at start: they wait on disk)."""
    with LlamaLogger(dsn, schema=schema, spill_dir=path) as logger:
        assert wait_until(lambda: logger.stats()["replayed"] >= events), logger.stats()
        assert wait_until(lambda: not logger.stats()["on_disk"] and not list(path.glob("*.jsonl")))
        return logger.stats()


def query(dsn: str, text: str, schema: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.SQL(text).format(sql.Identifier(schema))).fetchall()


def stored_numbers(dsn: str, schema: str) -> list[int]:
    """The event numbers in ``llama_log``, in insert order."""
    return [int(row["entity_id"]) for row in rows(dsn, schema)]


def test_small_files_are_replayed_in_one_transaction_with_their_marks(
    dsn: str, schema: str, tmp_path: Path
) -> None:
    """Ten files of three events (one with a job record) are one transaction, not ten: their
    rows and their ten marks, each with its own file's count, commit together, in order."""
    files = spill_files(
        dsn,
        schema,
        tmp_path,
        [events(first, 3) for first in range(0, 30, 3)] + [[event(30), JOB_ROW]],
    )
    replay(dsn, schema, tmp_path, 32)
    assert stored_numbers(dsn, schema) == list(range(31))
    transactions = query(
        dsn,
        "SELECT DISTINCT xmin::text FROM {0}.llama_log"
        " UNION SELECT xmin::text FROM {0}.llama_job"
        " UNION SELECT xmin::text FROM {0}.llama_log_spill_replays",
        schema,
    )
    assert len(transactions) == 1
    marks = query(dsn, "SELECT spill_id, events FROM {}.llama_log_spill_replays", schema)
    assert sorted(marks) == [(file.spill_id, 3) for file in files[:10]] + [(files[10].spill_id, 2)]
    assert query(dsn, "SELECT job_id, attempt FROM {}.llama_job", schema) == [("j2", 2)]


@pytest.mark.parametrize(
    "bad_line",
    [b'[3, "CREATED", "info", "cut off', b'{"not": "a row"}'],
    ids=["not JSON", "not a row"],
)
def test_a_file_with_a_bad_line_in_the_middle_is_set_aside_and_its_neighbours_written(
    dsn: str, schema: str, tmp_path: Path, bad_line: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """The bad line is met as the COPY reaches it, after the rows before it were sent: the
    transaction is rolled back whole, that file is set aside as unreadable (none of its rows
    stored), and the files before and after it in the same transaction are written once."""
    before, broken, after = spill_files(
        dsn, schema, tmp_path, [events(0, 3), events(3, 5), events(8, 3)]
    )
    lines = broken.path.read_bytes().splitlines()
    lines[3] = bad_line  # the header, two good rows, then the bad one
    broken.path.write_bytes(b"\n".join(lines) + b"\n")
    with caplog.at_level(logging.ERROR, logger="llamalogger"):
        replay(dsn, schema, tmp_path, 6)
    assert stored_numbers(dsn, schema) == [0, 1, 2, 8, 9, 10]
    marks = query(dsn, "SELECT spill_id FROM {}.llama_log_spill_replays", schema)
    assert sorted(marks) == [(before.spill_id,), (after.spill_id,)]
    assert [path.name for path in tmp_path.iterdir()] == [f"{broken.spill_id}.jsonl.unreadable"]
    [report] = [
        r.getMessage() for r in caplog.records if "cannot read spill file" in r.getMessage()
    ]
    assert "row 3" in report


def test_a_replay_cut_off_halfway_is_written_again_whole_and_once(
    dsn: str, schema: str, tmp_path: Path
) -> None:
    """The server ends the replay's connection in the middle of the second of three files (a
    trigger terminates its own backend once): the transaction is lost, the files go back, and
    the next attempt writes all of them, each row and each mark exactly once, in order."""
    names = {"schema": sql.Identifier(schema)}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                """
                CREATE SEQUENCE {schema}.cut_once;
                CREATE FUNCTION {schema}.cut_off() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF nextval('{schema}.cut_once') = 1 THEN
                        PERFORM pg_terminate_backend(pg_backend_pid());
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER cut_off BEFORE INSERT ON {schema}.llama_log FOR EACH ROW
                    WHEN (NEW.message = 'halfway') EXECUTE FUNCTION {schema}.cut_off();
                """
            ).format(**names)
        )
    second = [event(n, "halfway" if n == 125 else None) for n in range(100, 150)]
    files = spill_files(dsn, schema, tmp_path, [events(0, 100), second, events(150, 50)])
    stats = replay(dsn, schema, tmp_path, 200)
    assert stats["retried"] >= 1  # the attempt cut off
    assert stored_numbers(dsn, schema) == list(range(200))
    # The trigger met the row twice: the attempt cut off, then the one that was written.
    assert query(dsn, "SELECT last_value FROM {}.cut_once", schema) == [(2,)]
    marks = query(dsn, "SELECT spill_id, events FROM {}.llama_log_spill_replays", schema)
    assert sorted(marks) == sorted(
        (file.spill_id, size) for file, size in zip(files, [100, 50, 50], strict=True)
    )


def test_a_file_with_a_row_the_database_refuses_is_set_aside_and_its_neighbours_written(
    dsn: str, schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A constraint added since the outage refuses one row: the files that shared its
    transaction are written one transaction each, so that only the file holding that row is
    set aside as refused (none of its rows stored) and every other file is written once."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "ALTER TABLE {}.llama_log ADD CONSTRAINT refuse CHECK (message <> 'refused')"
            ).format(sql.Identifier(schema))
        )
    middle = [event(n, "refused" if n == 4 else None) for n in range(3, 6)]
    before, refused, after = spill_files(
        dsn, schema, tmp_path, [events(0, 3), middle, events(6, 3)]
    )
    with caplog.at_level(logging.ERROR, logger="llamalogger"):
        replay(dsn, schema, tmp_path, 6)
    assert stored_numbers(dsn, schema) == [0, 1, 2, 6, 7, 8]
    marks = query(dsn, "SELECT spill_id FROM {}.llama_log_spill_replays", schema)
    assert sorted(marks) == [(before.spill_id,), (after.spill_id,)]
    assert [path.name for path in tmp_path.iterdir()] == [f"{refused.spill_id}.jsonl.rejected"]
    [report] = [r.getMessage() for r in caplog.records if "refused spill file" in r.getMessage()]
    assert "CheckViolation" in report
