"""Hierarchy queries on rows written by the real logger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from llamalogger import Category, JobContext, LlamaLogger, SchemaNotMigrated
from llamalogger.queries import (
    UNFINISHED,
    LogStatus,
    Run,
    entity_history,
    job_chain,
    job_events,
    job_tree,
    logs_for_root,
    recent_events,
    root_of,
    runs,
    status,
)


@pytest.fixture
def logger(dsn: str, schema: str) -> Iterator[LlamaLogger]:
    with LlamaLogger(dsn, schema=schema) as instance:
        yield instance


@pytest.fixture
def album_import(logger: LlamaLogger) -> dict[str, JobContext]:
    """An import: album root, two artist jobs, a track job with an enrich job below it."""
    jobs: dict[str, JobContext] = {}
    with logger.job("import-album") as jobs["root"]:
        logger.created(("album", 1))
        for artist in (7, 8):
            with logger.job("link-artist") as jobs[f"artist-{artist}"]:
                logger.created(("artist", artist))
                logger.linked(("artist", artist), ("album", 1))
        with logger.job("import-track") as jobs["track"]:
            logger.created(("track", 9))
            logger.linked(("artist", 7), ("track", 9))
            with logger.job("enrich-track") as jobs["enrich"]:
                logger.log(Category.ENRICHED, "tempo", entity=("track", 9), bpm=120)
                logger.log(Category.ENRICHED, "key", entity=("track", 9), key="C")
    with logger.job("another-import"):
        logger.created(("album", 2))
    logger.log(Category.UPDATED, "outside any job", entity=("artist", 7))
    assert logger.flush(timeout=10)
    return jobs


class TestJobTree:
    def test_tree_has_jobs_counts_and_children_in_logged_order(
        self, conn: psycopg.Connection, schema: str, album_import: dict[str, JobContext]
    ) -> None:
        tree = job_tree(conn, album_import["root"].job_id, schema=schema)
        assert tree is not None
        assert (tree.name, tree.parent_job_id, tree.counts) == (
            "import-album",
            None,
            {"CREATED": 1},
        )
        assert [child.job_id for child in tree.children] == [
            album_import["artist-7"].job_id,
            album_import["artist-8"].job_id,
            album_import["track"].job_id,
        ]
        track = tree.children[2]
        assert track.counts == {"CREATED": 1, "LINKED": 1}
        (enrich,) = track.children
        assert (enrich.name, enrich.parent_job_id) == ("enrich-track", track.job_id)
        assert enrich.counts == {"ENRICHED": 2}
        assert enrich.first_at <= enrich.last_at
        assert sum(node.events for node in tree.walk()) == 9
        as_dict = tree.to_dict()
        assert as_dict["children"][2]["children"][0]["counts"] == {"ENRICHED": 2}

    def test_unknown_root_gives_none(self, conn: psycopg.Connection, schema: str) -> None:
        assert job_tree(conn, "no-such-root", schema=schema) is None

    def test_silent_root_and_silent_middle_jobs_appear_with_empty_counts(
        self, logger: LlamaLogger, conn: psycopg.Connection, schema: str
    ) -> None:
        with (
            logger.job("silent-root") as root,
            logger.job("silent-middle") as middle,
            logger.job("worker") as worker,
        ):
            logger.created(("track", 1))
        assert logger.flush(timeout=10)
        tree = job_tree(conn, root.job_id, schema=schema)
        assert tree is not None
        assert (tree.job_id, tree.counts) == (root.job_id, {})
        (shown_middle,) = tree.children
        assert (shown_middle.job_id, shown_middle.counts) == (middle.job_id, {})
        assert [child.job_id for child in shown_middle.children] == [worker.job_id]

    def test_tree_query_can_use_the_root_job_id_index(
        self, conn: psycopg.Connection, schema: str, album_import: dict[str, JobContext]
    ) -> None:
        conn.execute("SET enable_seqscan = off")  # the table is tiny; ask what is possible
        plan = conn.execute(
            sql.SQL("EXPLAIN SELECT job_id FROM {}.llama_log WHERE root_job_id = %s").format(
                sql.Identifier(schema)
            ),
            (album_import["root"].job_id,),
        ).fetchall()
        assert "llama_log_root_job_id_idx" in " ".join(line for (line,) in plan)


class TestOtherQueries:
    def test_logs_for_root_are_every_event_of_the_tree_in_order(
        self, conn: psycopg.Connection, schema: str, album_import: dict[str, JobContext]
    ) -> None:
        rows = logs_for_root(conn, album_import["root"].job_id, schema=schema)
        assert len(rows) == 9
        assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)
        assert {row["root_job_id"] for row in rows} == {album_import["root"].job_id}

    def test_job_chain_runs_from_the_job_up_to_its_root(
        self, conn: psycopg.Connection, schema: str, album_import: dict[str, JobContext]
    ) -> None:
        chain = job_chain(conn, album_import["enrich"].job_id, schema=schema)
        assert [node.job_id for node in chain] == [
            album_import["enrich"].job_id,
            album_import["track"].job_id,
            album_import["root"].job_id,
        ]
        assert job_chain(conn, "unknown-job", schema=schema) == []

    def test_entity_history_has_subject_and_object_events_with_their_jobs(
        self, conn: psycopg.Connection, schema: str, album_import: dict[str, JobContext]
    ) -> None:
        rows = entity_history(conn, "track", 9, schema=schema)
        assert [(row["category"], row["entity_type"]) for row in rows] == [
            ("CREATED", "track"),
            ("LINKED", "artist"),  # track 9 as the object of "artist 7 linked to track 9"
            ("ENRICHED", "track"),
            ("ENRICHED", "track"),
        ]
        assert {row["root_job_id"] for row in rows} == {album_import["root"].job_id}
        artist = entity_history(conn, "artist", "7", schema=schema)
        assert len(artist) == 4  # created, linked to album, linked to track, outside any job
        assert artist[-1]["job_id"] is None

    def test_recent_events_newest_last_with_root_filter_and_after_id(
        self, conn: psycopg.Connection, schema: str, album_import: dict[str, JobContext]
    ) -> None:
        last = recent_events(conn, limit=3, schema=schema)
        assert [row["message"] for row in last][-1] == "outside any job"
        assert len(last) == 3
        root = album_import["root"].job_id
        of_root = recent_events(conn, limit=100, root_job_id=root, schema=schema)
        assert len(of_root) == 9
        newer = recent_events(conn, after_id=of_root[5]["id"], root_job_id=root, schema=schema)
        assert [row["id"] for row in newer] == [row["id"] for row in of_root[6:]]

    def test_queries_accept_a_pool(
        self, dsn: str, schema: str, album_import: dict[str, JobContext]
    ) -> None:
        with ConnectionPool(dsn, min_size=1, max_size=1) as pool:
            tree = job_tree(pool, album_import["root"].job_id, schema=schema)
        assert tree is not None

    def test_unmigrated_schema_raises_schema_not_migrated(
        self, conn: psycopg.Connection, schema_name: str
    ) -> None:
        with pytest.raises(SchemaNotMigrated, match="llamalog migrate"):
            job_tree(conn, "x", schema=schema_name)


class TestStatus:
    def test_status_counts_events_by_category_and_distinct_roots(
        self,
        conn: psycopg.Connection,
        schema: str,
        album_import: dict[str, JobContext],
    ) -> None:
        """The most frequent category first, ties by name; rows outside a job add no root."""
        assert status(conn, schema=schema) == LogStatus(
            events=11,
            by_category=(("CREATED", 5), ("LINKED", 3), ("ENRICHED", 2), ("UPDATED", 1)),
            root_jobs=2,
        )

    def test_status_of_an_empty_table(self, conn: psycopg.Connection, schema: str) -> None:
        assert status(conn, schema=schema) == LogStatus(events=0, by_category=(), root_jobs=0)

    def test_status_of_an_unmigrated_schema_raises_schema_not_migrated(
        self, conn: psycopg.Connection, schema_name: str
    ) -> None:
        with pytest.raises(SchemaNotMigrated, match="llamalog migrate"):
            status(conn, schema=schema_name)


def _insert(conn: psycopg.Connection, schema: str, table: str, values: dict[str, object]) -> None:
    """One row of ``table``, inserted with parameterised SQL."""
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(schema, table),
            sql.SQL(", ").join(map(sql.Identifier, values)),
            sql.SQL(", ").join(sql.Placeholder() * len(values)),
        ),
        list(values.values()),
    )


def _record(conn: psycopg.Connection, schema: str, **values: object) -> None:
    """One llama_job record."""
    _insert(
        conn,
        schema,
        "llama_job",
        {"attempt": 1, "pid": 7, "host": "h", "status": "succeeded", **values},
    )


T0 = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


class TestJobRecords:
    """Trees, roots and runs read the job records of llama_job beside the events.

    ``recorded`` is a tree of records only, inserted with parameterised SQL at fixed times
    (the logger cannot date records back): root R, its child T (attempt 1 retried, attempt 2
    failed), T's silent child S, and U whose only attempt was retried.
    """

    @pytest.fixture
    def recorded(self, conn: psycopg.Connection, schema: str) -> None:
        _record(conn, schema, job_id="R", root_job_id="R", job_name="records-root",
                started_at=_at(0), ended_at=_at(90))  # fmt: skip
        for attempt, outcome in ((1, "retried"), (2, "failed")):
            _record(conn, schema, job_id="T", parent_job_id="R", root_job_id="R",
                    job_name="import-track", attempt=attempt, status=outcome,
                    started_at=_at(10 * attempt), ended_at=_at(10 * attempt + 5),
                    error_type="KeyError", error_message=f"attempt {attempt}")  # fmt: skip
        _record(conn, schema, job_id="S", parent_job_id="T", root_job_id="R",
                job_name="check", started_at=_at(1), ended_at=_at(2))  # fmt: skip
        _record(conn, schema, job_id="U", parent_job_id="R", root_job_id="R", job_name="retry",
                status="retried", started_at=_at(3), ended_at=_at(4))  # fmt: skip

    @pytest.mark.usefixtures("recorded")
    def test_tree_jobs_carry_their_records_status_duration_and_errors(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        tree = job_tree(conn, "R", schema=schema)
        assert tree is not None
        assert (tree.status, tree.seconds, tree.started_at, tree.ended_at, tree.events) == (
            "succeeded", 90.0, _at(0), _at(90), 0
        )  # fmt: skip
        assert tree.failures == 1
        track = tree.find("T")
        assert track is not None
        assert [(a.attempt, a.status) for a in track.attempts] == [(1, "retried"), (2, "failed")]
        assert (track.status, track.failed, track.error_type, track.error_message) == (
            "failed", True, "KeyError", "attempt 2"
        )  # fmt: skip
        assert track.seconds == 15.0  # from the first attempt's start to the last's end
        assert track.to_dict()["attempts"][0]["error_message"] == "attempt 1"
        silent = tree.find("S")
        assert silent is not None
        assert silent in track.children
        assert (silent.counts, silent.status, silent.first_at, silent.last_at) == (
            {}, "succeeded", _at(1), _at(2)
        )  # fmt: skip

    @pytest.mark.usefixtures("recorded")
    def test_a_last_attempt_that_was_retried_leaves_the_job_unfinished(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """Its next attempt is running, or its process was killed: no final record yet."""
        tree = job_tree(conn, "R", schema=schema)
        assert tree is not None
        retrying = tree.find("U")
        assert retrying is not None
        assert (retrying.status, retrying.finished, retrying.ended_at) == (UNFINISHED, False, None)
        assert (retrying.failed, len(retrying.attempts)) == (False, 1)

    def test_the_logger_s_records_give_every_job_its_status_and_real_duration(
        self, conn: psycopg.Connection, schema: str, album_import: dict[str, JobContext]
    ) -> None:
        tree = job_tree(conn, album_import["root"].job_id, schema=schema)
        assert tree is not None
        assert {job.status for job in tree.walk()} == {"succeeded"}
        assert all(len(job.attempts) == 1 for job in tree.walk())
        record = tree.attempts[0]
        assert tree.seconds == (record.ended_at - record.started_at).total_seconds()
        assert tree.started_at <= tree.first_at
        assert tree.ended_at is not None
        assert tree.ended_at >= max(job.last_at for job in tree.walk())

    @pytest.mark.usefixtures("recorded")
    def test_root_of_finds_the_tree_of_any_job(
        self, conn: psycopg.Connection, schema: str, album_import: dict[str, JobContext]
    ) -> None:
        root = album_import["root"].job_id
        assert root_of(conn, album_import["enrich"].job_id, schema=schema) == root
        assert root_of(conn, root, schema=schema) == root
        assert root_of(conn, "S", schema=schema) == "R"  # by its record only
        assert root_of(conn, "R", schema=schema) == "R"
        assert root_of(conn, "no-such-job", schema=schema) is None
        assert [node.job_id for node in job_chain(conn, "S", schema=schema)] == ["S", "T", "R"]

    @pytest.mark.usefixtures("recorded")
    def test_runs_newest_first_with_totals_and_filters(
        self, conn: psycopg.Connection, schema: str, album_import: dict[str, JobContext]
    ) -> None:
        found = runs(conn, schema=schema)
        assert [run.name for run in found] == ["another-import", "import-album", "records-root"]
        other, album, records_root = found
        assert (album.job_id, album.status, album.attempts, album.events, album.failures) == (
            album_import["root"].job_id, "succeeded", 1, 9, 0
        )  # fmt: skip
        assert records_root == Run(
            job_id="R", name="records-root", status="succeeded", started_at=_at(0),
            ended_at=_at(90), seconds=90.0, attempts=1, events=0, failures=1,
        )  # fmt: skip
        assert runs(conn, failed=True, schema=schema) == [records_root]
        assert runs(conn, name="import-album", schema=schema) == [album]
        assert runs(conn, limit=1, schema=schema) == [other]
        hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        assert runs(conn, since=hour_ago, schema=schema) == [other, album]  # R ended T0 + 90 s
        assert (
            runs(conn, since=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), schema=schema) == []
        )
        assert records_root.to_dict()["ended_at"] == _at(90).isoformat()

    def test_job_events_of_one_job_by_category_and_limit(
        self, conn: psycopg.Connection, schema: str, album_import: dict[str, JobContext]
    ) -> None:
        track = album_import["track"].job_id
        assert [e["category"] for e in job_events(conn, track, schema=schema)] == [
            "CREATED", "LINKED"
        ]  # fmt: skip
        assert [e["category"] for e in job_events(conn, track, limit=1, schema=schema)] == [
            "CREATED"
        ]
        linked = job_events(conn, track, category="LINKED", schema=schema)
        assert [e["related_type"] for e in linked] == ["track"]


def _event(
    conn: psycopg.Connection, schema: str, at: float, job: str, root: str, **values: object
) -> None:
    """One llama_log row at T0 + ``at`` seconds."""
    row = {"logged_at": _at(at), "job_id": job, "root_job_id": root, "category": "CREATED",
           "level": "info", "message": "m", "job_name": job, **values}  # fmt: skip
    _insert(conn, schema, "llama_log", row)


class TestRunsPicksTheNewest:
    """runs() picks the newest runs with a record from the records, and those without one
    from the events since the oldest run picked (the horizon): a run without a record that
    started before the horizon is no newer than those picked, however late it logged."""

    @pytest.fixture
    def mixed(self, conn: psycopg.Connection, schema: str) -> None:
        # A (0 s) and C (20 s) ended; B started at 10 s and still runs (events until 50 s);
        # Z started at -30 s and still runs (events until 60 s); D (40 s) ended, failed.
        _record(conn, schema, job_id="A", root_job_id="A", job_name="imp",
                started_at=_at(0), ended_at=_at(5))  # fmt: skip
        _event(conn, schema, 1, "A", "A")
        _record(conn, schema, job_id="C", root_job_id="C", job_name="imp",
                started_at=_at(20), ended_at=_at(25))  # fmt: skip
        _record(conn, schema, job_id="D", root_job_id="D", job_name="other", status="failed",
                started_at=_at(40), ended_at=_at(45))  # fmt: skip
        for at in (10, 30, 50):
            _event(conn, schema, at, "B", "B")
        _event(conn, schema, 12, "B1", "B", category="FAILED", level="error")
        for at in (-30, 60):
            _event(conn, schema, at, "Z", "Z")

    @pytest.mark.usefixtures("mixed")
    def test_runs_without_a_record_are_placed_by_their_first_event(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        found = runs(conn, schema=schema)
        assert [(run.job_id, run.status) for run in found] == [
            ("D", "failed"), ("C", "succeeded"), ("B", UNFINISHED), ("A", "succeeded"),
            ("Z", UNFINISHED),
        ]  # fmt: skip
        assert found[2].started_at == _at(10)
        # the horizon (C, 20 s) excludes B, which logged since but started before it
        assert [run.job_id for run in runs(conn, limit=2, schema=schema)] == ["D", "C"]
        assert [run.job_id for run in runs(conn, limit=3, schema=schema)] == ["D", "C", "B"]
        # Z logged at 60 s, later than anything, yet started first: it is last
        assert [run.job_id for run in runs(conn, limit=5, schema=schema)][-1] == "Z"

    @pytest.mark.usefixtures("mixed")
    def test_failed_runs_are_found_with_and_without_a_record_and_a_window(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        assert [run.job_id for run in runs(conn, failed=True, schema=schema)] == ["D", "B"]
        assert [run.job_id for run in runs(conn, failed=True, limit=1, schema=schema)] == ["D"]
        since = runs(conn, failed=True, since=_at(46), schema=schema)
        assert [(run.job_id, run.failures) for run in since] == [("B", 1)]  # D ended at 45 s
        assert [run.job_id for run in runs(conn, name="imp", schema=schema)] == ["C", "A"]
        assert runs(conn, name="imp", failed=True, schema=schema) == []

    @pytest.mark.usefixtures("mixed")
    def test_until_status_root_and_offset(self, conn: psycopg.Connection, schema: str) -> None:
        def ids(**filters: object) -> list[str]:
            return [run.job_id for run in runs(conn, schema=schema, **filters)]  # type: ignore[arg-type]

        assert ids(until=_at(15)) == ["B", "A", "Z"]
        assert ids(status="failed") == ["D"]
        assert ids(status=UNFINISHED) == ["B", "Z"]
        assert ids(status="succeeded") == ["C", "A"]
        assert ids(root="B") == ["B"]
        assert ids(root="C") == ["C"]
        assert ids(root="B", failed=True) == ["B"]
        assert ids(root="A", failed=True) == []
        assert ids(limit=2, offset=1) == ["C", "B"]
        assert ids(limit=5, offset=3) == ["A", "Z"]
        assert ids(limit=2, offset=5) == []
        assert ids(limit=0) == []

    def test_many_runs_come_newest_first_whatever_the_limit(
        self, conn: psycopg.Connection, schema: str
    ) -> None:
        """Against the order a full sort of every run gives."""
        for number in range(30):
            root = f"R{number:02}"
            if number % 3:
                _record(conn, schema, job_id=root, root_job_id=root, job_name="imp",
                        started_at=_at(number), ended_at=_at(number + 0.5),
                        status="failed" if number % 4 == 0 else "succeeded")  # fmt: skip
            _event(conn, schema, number + 0.25, root, root)
        newest = [f"R{number:02}" for number in reversed(range(30))]
        failing = [root for root in newest if int(root[1:]) % 3 and int(root[1:]) % 4 == 0]
        for limit in (1, 5, 10, 29, 30, 40):
            assert [run.job_id for run in runs(conn, limit=limit, schema=schema)] == newest[:limit]
            assert [
                run.job_id for run in runs(conn, failed=True, limit=limit, schema=schema)
            ] == failing[:limit]


def test_trees_and_roots_of_a_schema_from_before_the_job_table_read_the_events(
    dsn: str, conn: psycopg.Connection, schema_name: str
) -> None:
    """New code against a 0005 schema (deployed before `llamalog migrate` ran): the tree and
    the root come from the events, every job unfinished, as before job records existed."""
    from llamalogger.schema import migrate

    migrate(conn, schema=schema_name, target="0005")
    insert = sql.SQL(
        "INSERT INTO {}.llama_log (category, level, message, job_id, parent_job_id,"
        " root_job_id, job_name) VALUES ('CREATED', 'info', 'm', %s, %s, %s, %s)"
    ).format(sql.Identifier(schema_name))
    conn.execute(insert, ("R", None, "R", "old-root"))
    conn.execute(insert, ("C", "R", "R", "old-child"))
    assert root_of(conn, "C", schema=schema_name) == "R"
    tree = job_tree(conn, "R", schema=schema_name)
    assert tree is not None
    assert [(job.job_id, job.status) for job in tree.walk()] == [
        ("R", UNFINISHED), ("C", UNFINISHED)
    ]  # fmt: skip
    assert [node.job_id for node in job_chain(conn, "C", schema=schema_name)] == ["C", "R"]
    with pytest.raises(SchemaNotMigrated, match="llamalog migrate"):
        runs(conn, schema=schema_name)
