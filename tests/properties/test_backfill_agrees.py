"""Invariant 9 of docs/design.md §3: the runtime and the migration's backfill agree.

Rows are written by a real ``LlamaLogger``; then their ``root_job_id`` is wiped and
``backfill_root_job_id`` has to find every one of them again from ``job_id`` and
``parent_job_id`` alone.

The backfill can only see jobs that have rows. By the §4 rule "a parent job that has no rows
of its own is taken as the root", a job that logs nothing ends the walk up. That is right for a
silent *root* (its children point at it and it is their root), and harmless for a silent leaf,
but a silent job *between* a root and logging descendants hides the true root: the property
is stated for forests without such jobs, and ``TestWhereTheBackfillCannotSeeTheRoot`` pins
down what happens with them.
"""

from __future__ import annotations

import threading
import uuid

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from llamalogger import Category, JobContext, LlamaLogger
from llamalogger._context import (
    HEADER_JOB_ID,
    HEADER_PARENT_JOB_ID,
    HEADER_ROOT_JOB_ID,
)
from llamalogger.schema import BackfillReport, backfill_root_job_id

# (id, job_id, root_job_id) of one row
Row = tuple[int, str | None, str | None]


@attrs.frozen
class Job:
    """One job of a forest: how many events it logs before and after its children."""

    name: str
    before: int
    after: int
    # How it names its parent: None for the enclosing job (or none at all, for a root);
    # "headers" for parent=JobContext.from_headers(enclosing.to_headers());
    # "remote" for a root-level job whose parent is a job of another process that logs nothing
    # here (its headers carry only its id, so it is a root itself).
    parent: str | None
    children: tuple[Job, ...]


@attrs.frozen
class Forest:
    trees: tuple[Job, ...]
    outside: tuple[int, ...]  # events logged outside any job before each tree and after all


@st.composite
def forests(draw: st.DrawFn, max_jobs: int = 30, max_depth: int = 6) -> Forest:
    """Random job forests in which only a true root or a leaf may log nothing."""
    remaining = draw(st.integers(1, max_jobs))

    def job(depth: int) -> Job:
        nonlocal remaining
        remaining -= 1
        if depth == 0:
            parent = draw(st.sampled_from([None, None, None, "remote"]))
        else:
            parent = draw(st.sampled_from([None, None, "headers"]))
        children: list[Job] = []
        if depth < max_depth:
            for _ in range(draw(st.integers(0, min(3, remaining)))):
                if remaining <= 0:
                    break
                children.append(job(depth + 1))
        # A job that logs nothing must be a true root (no parent anywhere) or have nothing
        # below it; otherwise the backfill cannot see past it (see the module docstring).
        may_be_silent = (depth == 0 and parent is None) or not children
        total = draw(st.integers(0 if may_be_silent else 1, 3))
        before = draw(st.integers(0, total))
        name = draw(st.sampled_from(["import-album", "link-artist", "enrich-track"]))
        return Job(name, before, total - before, parent, tuple(children))

    trees: list[Job] = []
    while remaining > 0:
        trees.append(job(0))
    outside = draw(st.lists(st.integers(0, 2), min_size=len(trees) + 1, max_size=len(trees) + 1))
    return Forest(tuple(trees), tuple(outside))


def log_forest(logger: LlamaLogger, forest: Forest) -> int:
    """Log ``forest`` with nested jobs; returns the number of events logged."""
    logged = 0

    def event(where: str) -> None:
        nonlocal logged
        logged += 1
        logger.log(Category.ENRICHED, f"{where} event {logged}")

    def run(job: Job, enclosing: JobContext | None) -> None:
        explicit: JobContext | None = None
        if job.parent == "remote":
            explicit = JobContext.from_headers({HEADER_JOB_ID: f"remote-{uuid.uuid4().hex}"})
        elif job.parent == "headers" and enclosing is not None:
            explicit = JobContext.from_headers(enclosing.to_headers())
        with logger.job(job.name, parent=explicit) as context:
            for _ in range(job.before):
                event(job.name)
            for child in job.children:
                run(child, context)
            for _ in range(job.after):
                event(job.name)

    for tree, outside in zip((*forest.trees, None), forest.outside, strict=True):
        for _ in range(outside):
            event("outside")
        if tree is not None:
            run(tree, None)
    return logged


def rows(conn: psycopg.Connection, schema: str) -> list[Row]:
    query = sql.SQL("SELECT id, job_id, root_job_id FROM {}.llama_log ORDER BY id").format(
        sql.Identifier(schema)
    )
    return conn.execute(query).fetchall()


def wipe_roots_and_backfill(conn: psycopg.Connection, schema: str) -> BackfillReport:
    conn.execute(
        sql.SQL("UPDATE {}.llama_log SET root_job_id = NULL").format(sql.Identifier(schema))
    )
    return backfill_root_job_id(conn, schema=schema)


@pytest.fixture
def empty_table(
    module_logger: LlamaLogger, module_conn: psycopg.Connection, module_schema: str
) -> None:
    """The module's table, emptied: the backfill fills every NULL root in the schema."""
    clear_table(module_logger, module_conn, module_schema)


def clear_table(logger: LlamaLogger, conn: psycopg.Connection, schema: str) -> None:
    # Flush first, so that no row of an earlier test arrives after the table was emptied.
    assert logger.flush(timeout=30)
    conn.execute(sql.SQL("TRUNCATE {}.llama_log").format(sql.Identifier(schema)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(forest=forests())
def test_backfill_restores_every_root_the_logger_wrote(
    module_logger: LlamaLogger,
    module_conn: psycopg.Connection,
    module_schema: str,
    forest: Forest,
) -> None:
    """Take any rows the logger wrote, set root_job_id to NULL, run the backfill: every row
    gets back exactly the root_job_id the logger wrote (invariant 9)."""
    clear_table(module_logger, module_conn, module_schema)
    logged = log_forest(module_logger, forest)
    assert module_logger.flush(timeout=30)
    written = rows(module_conn, module_schema)
    assert len(written) == logged

    report = wipe_roots_and_backfill(module_conn, module_schema)

    assert rows(module_conn, module_schema) == written
    outside = sum(1 for _, job_id, _ in written if job_id is None)
    assert report == BackfillReport(len(written) - outside, outside, 0, len(written))


@pytest.mark.usefixtures("empty_table")
class TestWhereTheBackfillCannotSeeTheRoot:
    """The known limit of invariant 9: the backfill only sees jobs that have rows.

    A job that logs nothing leaves no trace of its own parent, so the backfill, following
    §4 ("a parent job that has no rows of its own is taken as the root"), stops there and
    takes it as the root of everything below it. The logger knew better: it wrote the root
    of the whole tree. Rows above the silent job have their own rows to go by and keep
    their true root. Nothing can recover the lost link from the rows alone; the fix, if one
    is wanted, is for a job to write a row when it starts.
    """

    def test_silent_intermediate_job_becomes_the_root_of_its_subtree(
        self, module_logger: LlamaLogger, module_conn: psycopg.Connection, module_schema: str
    ) -> None:
        logger = module_logger
        with logger.job("import-album") as top:
            logger.created(("album", 1))
            with logger.job("silent-batch") as silent, logger.job("link-artist") as leaf:
                logger.linked(("artist", 7), ("album", 1))
                with logger.job("enrich-track") as below:
                    logger.log(Category.ENRICHED, "track enriched", entity=("track", 9))
        assert logger.flush(timeout=30)
        written = rows(module_conn, module_schema)
        assert [root for *_, root in written] == [top.job_id] * 3  # what the logger wrote

        report = wipe_roots_and_backfill(module_conn, module_schema)

        assert [(job, root) for _, job, root in rows(module_conn, module_schema)] == [
            (top.job_id, top.job_id),  # above the silent job: the true root
            (leaf.job_id, silent.job_id),  # below it: the silent job is taken as the root
            (below.job_id, silent.job_id),
        ]
        assert report == BackfillReport(3, 0, 0, 3)

    def test_parent_from_headers_of_a_non_root_job_that_logs_nothing_here(
        self, module_logger: LlamaLogger, module_conn: psycopg.Connection, module_schema: str
    ) -> None:
        """The same limit across processes: the headers name a root the rows never mention."""
        headers = {
            HEADER_JOB_ID: "remote-step",
            HEADER_PARENT_JOB_ID: "remote-import",
            HEADER_ROOT_JOB_ID: "remote-import",
        }
        logger = module_logger
        with logger.job("transcode", parent=JobContext.from_headers(headers)) as job:
            logger.log(Category.UPDATED, "transcoded", entity=("track", 3))
        assert logger.flush(timeout=30)
        assert rows(module_conn, module_schema)[0][1:] == (job.job_id, "remote-import")

        wipe_roots_and_backfill(module_conn, module_schema)

        assert rows(module_conn, module_schema)[0][1:] == (job.job_id, "remote-step")


@pytest.mark.usefixtures("empty_table")
def test_backfill_agrees_when_the_parent_came_from_headers_of_a_job_with_rows(
    module_logger: LlamaLogger, module_conn: psycopg.Connection, module_schema: str
) -> None:
    """A job continued elsewhere from headers of a job that logged rows is filled with the
    root the logger wrote: the backfill follows the chain through the producer's rows."""
    logger = module_logger
    with logger.job("import-album") as top:
        logger.created(("album", 1))
        with logger.job("fetch-tracks") as producer:
            logger.created(("track", 9))
            headers = producer.to_headers()

    def consumer() -> None:
        # A plain thread starts without any job, like another process would.
        with logger.job("transcode", parent=JobContext.from_headers(headers)):
            logger.log(Category.UPDATED, "transcoded", entity=("track", 9))
            with logger.job("tag"):
                logger.log(Category.ENRICHED, "tagged", entity=("track", 9))

    thread = threading.Thread(target=consumer)
    thread.start()
    thread.join()
    assert logger.flush(timeout=30)
    written = rows(module_conn, module_schema)
    assert [root for *_, root in written] == [top.job_id] * 4

    report = wipe_roots_and_backfill(module_conn, module_schema)

    assert rows(module_conn, module_schema) == written
    assert report == BackfillReport(4, 0, 0, 4)
