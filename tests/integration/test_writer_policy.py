"""The delivery policy of docs/design.md §5 on a real server: nothing dropped while the database
takes writes, hostile input never costs another event, refusals are reported without a
flood, invalid settings leave nothing behind, old schemas keep events until migrated."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from llamalogger import ConfigurationError, LlamaLogger
from llamalogger.schema import migrate


def rows_of(dsn: str, schema: str, where: str = "true", params: tuple[object, ...] = ()) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.llama_log WHERE " + where).format(
                sql.Identifier(schema)
            ),
            params,
        ).fetchone()
    assert row is not None
    return int(row[0])


def adds_up(stats: Mapping[str, int]) -> bool:
    parts = ("written", "rejected", "dropped", "on_disk", "queued")
    return stats["enqueued"] == sum(stats[part] for part in parts)


def test_a_flood_on_a_healthy_server_is_slowed_down_not_dropped(dsn: str, schema: str) -> None:
    """More events than the queue holds, logged as fast as one thread can: the caller waits
    for room while the writer makes progress, and every event is stored."""
    events = 150_000
    with LlamaLogger(dsn, schema=schema, queue_size=20_000, batch_size=5_000) as logger:
        for number in range(events):
            logger.created(("track", number))
        assert logger.flush(timeout=60)
        stats = logger.stats()
    assert stats["dropped"] == 0
    assert stats["written"] == events
    assert adds_up(stats)
    assert rows_of(dsn, schema) == events


class RaisingRepr:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        raise self.error

    __str__ = __repr__


class ExplodingMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("no items")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot iterate")

    def __len__(self) -> int:
        return 3


class ExplodingList(list[int]):
    def __iter__(self) -> Iterator[int]:
        raise KeyboardInterrupt


@pytest.mark.parametrize(
    "hostile",
    [
        RaisingRepr(SystemExit(2)),
        RaisingRepr(KeyboardInterrupt()),
        ExplodingMapping(),
        ExplodingList([1, 2]),
    ],
    ids=["repr-SystemExit", "repr-KeyboardInterrupt", "mapping-iteration", "list-iteration"],
)
def test_one_hostile_detail_costs_no_other_event(dsn: str, schema: str, hostile: object) -> None:
    """999 good events and one whose detail raises anything (even SystemExit) when encoded:
    all 1000 are stored, the bad one with a stand-in, and the writer goes on."""
    with LlamaLogger(dsn, schema=schema) as logger:
        for number in range(1000):
            if number == 500:
                logger.created(("track", number), bad=hostile, nested={"x": [hostile]})
            else:
                logger.created(("track", number), good=number)
        assert logger.flush(timeout=30)
        logger.created(("track", "after"))
        assert logger.flush(timeout=30)
        stats = logger.stats()
    assert (stats["written"], stats["dropped"], stats["rejected"], stats["errors"]) == (
        1001,
        0,
        0,
        0,
    )
    assert stats["sanitised"] >= 1
    assert rows_of(dsn, schema) == 1001


def test_rows_refused_one_by_one_are_reported_once_per_reason(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A batch of which the server refuses 100 rows: 100 dead letters, every batch-mate
    written, and one ERROR line for the reason instead of one per row."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "ALTER TABLE {}.llama_log ADD CONSTRAINT no_rejects CHECK (message <> 'x')"
            ).format(sql.Identifier(schema))
        )
    dead = tmp_path / "dead.jsonl"
    with (
        caplog.at_level(logging.ERROR, logger="llamalogger"),
        LlamaLogger(dsn, schema=schema, dead_letter_path=dead, flush_interval=5) as logger,
    ):
        for number in range(1000):
            logger.created(("track", number), "x" if number % 10 == 0 else f"ok {number}")
        assert logger.flush(timeout=60)
        stats = logger.stats()
    assert (stats["written"], stats["rejected"]) == (900, 100)
    assert len(dead.read_text().splitlines()) == 100
    errors = [r for r in caplog.records if r.name == "llamalogger" and r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage()[:100] for r in errors]
    assert rows_of(dsn, schema) == 900


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("batch_size", 0),
        ("queue_size", -1),
        ("flush_interval", 0),
        ("block_timeout", float("nan")),
        ("exit_timeout", "10"),
        ("on_full", "wait"),
        ("spill_max_bytes", 0),
        ("spill_dir", 42),
        ("dead_letter_path", 3.5),
        ("flush_on_outer_job_exit", "yes"),
    ],
)
def test_an_invalid_setting_is_named_and_leaves_no_thread_or_connection(
    dsn: str, option: str, value: object
) -> None:
    threads_before = set(threading.enumerate())
    application = f"llamalog_settings_{os.getpid()}_{option}"
    with pytest.raises(ConfigurationError, match=option):
        LlamaLogger(make_conninfo(dsn, application_name=application), **{option: value})  # type: ignore[arg-type]
    assert set(threading.enumerate()) <= threads_before
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application]
        ).fetchone()
    assert row == (0,)


def test_new_code_against_an_old_schema_keeps_events_until_migrated(
    dsn: str, schema_name: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Against a schema at 0001 (no root_job_id): one warning naming `llamalog migrate`,
    the events wait on disk, and they are written once the schema is migrated."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, schema=schema_name, target="0001")
    with caplog.at_level(logging.WARNING, logger="llamalogger"):
        logger = LlamaLogger(dsn, schema=schema_name, spill_dir=tmp_path / "spill")
        with logger.job("import-album"):
            for number in range(50):
                logger.linked(("artist", number), ("album", 1))
        assert logger.flush(timeout=10)
        assert logger.stats()["on_disk"] == 51  # the events and the job's record
        warnings = [r.getMessage() for r in caplog.records if "llamalog migrate" in r.getMessage()]
        assert len(warnings) == 1
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn, schema=schema_name)
        assert logger.close(timeout=10)
    stats = logger.stats()
    assert (stats["written"], stats["on_disk"], stats["rejected"]) == (51, 0, 0)
    assert rows_of(dsn, schema_name, "category = 'LINKED' AND root_job_id IS NOT NULL") == 50


@pytest.mark.skipif(sys.platform != "linux", reason="fork is tested on Linux")
def test_fork_inside_a_job_then_os_exit_delivers_the_childs_events(dsn: str, schema: str) -> None:
    """The child inherits the parent's current job, logs in a nested job and ends with
    os._exit: the end of its outermost job *in that process* delivers its events."""
    with LlamaLogger(dsn, schema=schema) as logger, logger.job("parent-job") as parent:
        pid = os.fork()
        if pid == 0:  # the child: no pytest, no atexit, no finally
            try:
                with logger.job("child-work"):
                    for number in range(300):
                        logger.created(("track", number))
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert (
        rows_of(dsn, schema, "job_name = 'child-work' AND parent_job_id = %s", (parent.job_id,))
        == 300
    )


def _sessions_named(dsn: str, application: str) -> int:
    """How many sessions of the server have ``application`` as their application_name."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application]
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_deprecated_pool_kwargs_still_reach_the_connection(dsn: str, schema: str) -> None:
    """``pool_kwargs={"kwargs": {...}}`` keeps working (with a warning), even when it
    repeats an option the writer sets itself."""
    application = f"llamalog_kwargs_{os.getpid()}"
    with pytest.warns(DeprecationWarning, match="pool_kwargs"):
        logger = LlamaLogger(
            dsn,
            schema=schema,
            pool_kwargs={"kwargs": {"application_name": application, "autocommit": True}},
        )
    with logger:
        logger.created(("track", 1))
        assert logger.flush(timeout=10)
        assert _sessions_named(dsn, application) == 1
    assert (logger.stats()["written"], logger.stats()["rejected"]) == (1, 0)


def test_connect_options_reach_the_writers_connection(dsn: str, schema: str) -> None:
    """``connect_options`` are the supported way to set the writer's connection options;
    the deprecated ``pool_kwargs`` now points to it."""
    application = f"llamalog_options_{os.getpid()}"
    with LlamaLogger(
        dsn, schema=schema, connect_options={"application_name": application}
    ) as logger:
        logger.created(("track", 1))
        assert logger.flush(timeout=10)
        assert _sessions_named(dsn, application) == 1
    with pytest.warns(DeprecationWarning, match="connect_options"):
        LlamaLogger(dsn, schema=schema, pool_kwargs={"kwargs": {}}).close()


def test_what_the_dsn_says_wins_over_the_writers_connection_defaults(dsn: str, schema: str) -> None:
    """An application_name in the DSN names the writer's session (the default is
    ``llamalogger``), so operators can tell their services apart in pg_stat_activity."""
    application = f"llamalog_dsn_{os.getpid()}"
    with LlamaLogger(make_conninfo(dsn, application_name=application), schema=schema) as logger:
        logger.created(("track", 1))
        assert logger.flush(timeout=10)
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application]
            ).fetchone()
    assert row == (1,)
