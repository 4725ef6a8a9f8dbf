"""Hierarchy queries over ``llama_log`` and ``llama_job``: the runs (root jobs), an
import's events, its job tree with each job's record, a job's chain of ancestors, and an
entity's history.

Every function takes a psycopg connection (or a ``ConnectionPool``, from which it
borrows one). The tree and the chain are read with indexed queries on ``root_job_id``
(one over the events, one over the job records) and assembled in Python: storing the root
on every row is what makes recursive SQL unnecessary.

A job that ended has a record in ``llama_job`` (one per attempt of a retried task); a job
whose process was killed, or that is still running, has none: it is *unfinished*, and is
known from its events alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from ._conninfo import DEFAULT_SCHEMA, validate_schema
from ._errors import SchemaNotMigrated

__all__ = [
    "UNFINISHED",
    "JobAttempt",
    "JobNode",
    "LogStatus",
    "Run",
    "entity_history",
    "job_chain",
    "job_events",
    "job_records",
    "job_tree",
    "logs_for_root",
    "recent_events",
    "root_of",
    "runs",
    "status",
]

#: The status of a job without a final record: still running, or its process was killed.
UNFINISHED = "unfinished"

Connectable = psycopg.Connection[Any] | ConnectionPool[Any]


@contextmanager
def _connection(source: Connectable) -> Iterator[psycopg.Connection[Any]]:
    """A connection from ``source``; a missing table becomes ``SchemaNotMigrated``."""
    try:
        if isinstance(source, ConnectionPool):
            with source.connection() as conn:
                yield conn
        else:
            yield source
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        raise SchemaNotMigrated(
            f"{exc.diag.message_primary or exc}: run `llamalog migrate` first"
        ) from exc


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.llama_log").format(sql.Identifier(validate_schema(schema)))


def _job_table(schema: str) -> sql.Composed:
    return sql.SQL("{}.llama_job").format(sql.Identifier(validate_schema(schema)))


def _has_job_table(conn: psycopg.Connection[Any], schema: str) -> bool:
    """Whether the schema has ``llama_job`` (migration 0006): trees and roots of an older
    schema are read from the events alone, as before."""
    name = sql.Identifier(validate_schema(schema), "llama_job").as_string(conn)
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@attrs.frozen
class JobAttempt:
    """One record of ``llama_job``: a finished job, or one attempt of a retried task."""

    #: 1 for a job run once; a task retried by its queue numbers its attempts from 1.
    attempt: int
    #: ``succeeded``, ``failed``, ``cancelled``, or ``retried`` (an attempt run again).
    status: str
    started_at: dt.datetime
    ended_at: dt.datetime
    error_type: str | None = None
    error_message: str | None = None
    pid: int | None = None
    host: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    #: The job's context and what a task queue knows of it.
    details: dict[str, Any] | None = None

    @property
    def seconds(self) -> float:
        """How long the attempt ran, from its start to its end."""
        return (self.ended_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: times as ISO 8601 strings."""
        return {
            "attempt": self.attempt,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat(),
            "seconds": self.seconds,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "pid": self.pid,
            "host": self.host,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "details": self.details,
        }


@attrs.define
class JobNode:
    """One job of a tree: its events by category, its records, its time span and its
    child jobs.

    ``first_at`` and ``last_at`` are the times of its first and last event; a job that
    logged nothing has its record's start and end there instead.
    """

    job_id: str
    name: str | None
    parent_job_id: str | None
    counts: dict[str, int]
    first_at: dt.datetime
    last_at: dt.datetime
    children: list[JobNode] = attrs.field(factory=list)
    #: Its ``llama_job`` records in attempt order: none while it is unfinished.
    attempts: list[JobAttempt] = attrs.field(factory=list)

    @property
    def events(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> bool:
        """Whether the job has its final record (a last attempt that is not ``retried``)."""
        return bool(self.attempts) and self.attempts[-1].status != "retried"

    @property
    def status(self) -> str:
        """The final record's status, else :data:`UNFINISHED` (running, or killed)."""
        return self.attempts[-1].status if self.finished else UNFINISHED

    @property
    def started_at(self) -> dt.datetime:
        """When its first attempt started; unfinished without a record: its first event."""
        return self.attempts[0].started_at if self.attempts else self.first_at

    @property
    def ended_at(self) -> dt.datetime | None:
        """When its last attempt ended; ``None`` while it is unfinished."""
        return self.attempts[-1].ended_at if self.finished else None

    @property
    def seconds(self) -> float:
        """Its real duration from its records (all attempts); an unfinished job's is the
        span from its start to the last event or record of its tree so far."""
        end = self.ended_at
        if end is None:
            times = [job.last_at for job in self.walk()]
            times.extend(attempt.ended_at for job in self.walk() for attempt in job.attempts)
            end = max(times)
        return max(0.0, (end - self.started_at).total_seconds())

    @property
    def error_type(self) -> str | None:
        return self.attempts[-1].error_type if self.attempts else None

    @property
    def error_message(self) -> str | None:
        return self.attempts[-1].error_message if self.attempts else None

    @property
    def failed(self) -> bool:
        """Whether it failed: its final record says so, or, unfinished, it logged a
        ``FAILED`` event (a process that died after its failure leaves no record)."""
        if self.finished:
            return self.attempts[-1].status == "failed"
        return "FAILED" in self.counts

    @property
    def failures(self) -> int:
        """How many jobs of this subtree (itself included) failed (see :attr:`failed`)."""
        return sum(job.failed for job in self.walk())

    def walk(self) -> Iterator[JobNode]:
        """This job and all jobs below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, job_id: str) -> JobNode | None:
        """The job ``job_id`` of this subtree, or ``None``."""
        return next((job for job in self.walk() if job.job_id == job_id), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: times as ISO 8601 strings, children nested."""
        return {
            "job_id": self.job_id,
            "name": self.name,
            "parent_job_id": self.parent_job_id,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "ended_at": _iso(self.ended_at),
            "seconds": self.seconds,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "failures": self.failures,
            "attempts": [attempt.to_dict() for attempt in self.attempts],
            "counts": dict(self.counts),
            "events": self.events,
            "first_at": self.first_at.isoformat(),
            "last_at": self.last_at.isoformat(),
            "children": [child.to_dict() for child in self.children],
        }


def _fetch_dicts(
    source: Connectable, query: sql.Composed, params: Sequence[Any] | Mapping[str, Any]
) -> list[dict[str, Any]]:
    with _connection(source) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def logs_for_root(
    source: Connectable, root_job_id: str, *, schema: str = DEFAULT_SCHEMA
) -> list[dict[str, Any]]:
    """Every event of one job tree (one import), in the order they were logged."""
    query = sql.SQL("SELECT * FROM {} WHERE root_job_id = %s ORDER BY logged_at, id").format(
        _table(schema)
    )
    return _fetch_dicts(source, query, (root_job_id,))


def entity_history(
    source: Connectable, entity_type: str, entity_id: str | int, *, schema: str = DEFAULT_SCHEMA
) -> list[dict[str, Any]]:
    """Every event about one entity, as the subject or as the object of a link, in logged
    order; each row carries its ``job_id``, ``job_name`` and ``root_job_id``."""
    # Two indexed branches rather than one OR, so each uses its own index.
    query = sql.SQL(
        """
        SELECT * FROM {table} WHERE entity_type = %(type)s AND entity_id = %(id)s
        UNION
        SELECT * FROM {table} WHERE related_type = %(type)s AND related_id = %(id)s
        ORDER BY logged_at, id
        """
    ).format(table=_table(schema))
    return _fetch_dicts(source, query, {"type": entity_type, "id": str(entity_id)})


def recent_events(
    source: Connectable,
    *,
    limit: int = 10,
    root_job_id: str | None = None,
    after_id: int | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> list[dict[str, Any]]:
    """The newest ``limit`` events (optionally of one root), oldest first.

    With ``after_id``: the events inserted after that row id instead (at most ``limit``,
    oldest first), which is how ``llamalog tail`` follows new events.
    """
    conditions = [sql.SQL("true")]
    params: list[object] = []
    if root_job_id is not None:
        conditions.append(sql.SQL("root_job_id = %s"))
        params.append(root_job_id)
    if after_id is not None:
        conditions.append(sql.SQL("id > %s"))
        params.append(after_id)
    order = sql.SQL("id ASC" if after_id is not None else "id DESC")
    query = sql.SQL("SELECT * FROM {} WHERE {} ORDER BY {} LIMIT %s").format(
        _table(schema), sql.SQL(" AND ").join(conditions), order
    )
    rows = _fetch_dicts(source, query, (*params, limit))
    return rows if after_id is not None else rows[::-1]


def job_events(
    source: Connectable,
    job_id: str,
    *,
    category: str | None = None,
    limit: int | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> list[dict[str, Any]]:
    """The events of one job (not of its children), in logged order: at most ``limit``,
    only of ``category`` if given."""
    query = sql.SQL(
        "SELECT * FROM {} WHERE job_id = %(job)s"
        " AND (%(category)s::text IS NULL OR category::text = %(category)s)"
        " ORDER BY logged_at, id LIMIT %(limit)s"
    ).format(_table(schema))
    params = {"job": job_id, "category": category, "limit": limit}
    return _fetch_dicts(source, query, params)


def root_of(source: Connectable, job_id: str, *, schema: str = DEFAULT_SCHEMA) -> str | None:
    """The root of the tree that holds ``job_id``, or ``None`` if nothing names it.

    Found from the job's record, its events, or (for a root that neither logged nor
    ended) the rows of its tree; each look-up is one index probe. A job that logged
    nothing, has no record and is not a root is not found: its tree names it only as a
    parent.
    """
    events = sql.SQL(
        "(SELECT root_job_id FROM {log} WHERE job_id = %(id)s AND root_job_id IS NOT NULL LIMIT 1)"
        " UNION ALL (SELECT root_job_id FROM {log} WHERE root_job_id = %(id)s LIMIT 1)"
    ).format(log=_table(schema))
    records = sql.SQL(
        "(SELECT root_job_id FROM {jobs} WHERE job_id = %(id)s LIMIT 1) UNION ALL {events}"
        " UNION ALL (SELECT root_job_id FROM {jobs} WHERE root_job_id = %(id)s LIMIT 1)"
    )
    with _connection(source) as conn:
        if _has_job_table(conn, schema):
            events = records.format(jobs=_job_table(schema), events=events)
        row = conn.execute(events + sql.SQL(" LIMIT 1"), {"id": job_id}).fetchone()
    return None if row is None else str(row[0])


def job_chain(source: Connectable, job_id: str, *, schema: str = DEFAULT_SCHEMA) -> list[JobNode]:
    """``job_id`` and its ancestors, nearest first, ending at the root; ``[]`` if unknown.

    Read from the job's tree (found with :func:`root_of`, read with :func:`job_tree`). An
    ancestor that logged nothing appears with empty counts (and its record, if it ended);
    above a job that neither logged nor ended the chain continues at the root, the only
    ancestor its rows still name.
    """
    root = root_of(source, job_id, schema=schema)
    if root is None:
        return []
    tree = job_tree(source, root, schema=schema)
    if tree is None:
        return []
    parents: dict[str, JobNode] = {}
    target: JobNode | None = None
    for node in tree.walk():
        for child in node.children:
            parents[child.job_id] = node
        if node.job_id == job_id:
            target = node
    chain: list[JobNode] = []
    while target is not None:
        chain.append(target)
        target = parents.get(target.job_id)
    return chain


_RECORD_COLUMNS = sql.SQL(
    "job_id, parent_job_id, job_name, attempt, status, started_at, ended_at, error_type,"
    " error_message, pid, host, entity_type, entity_id, details"
)

RecordRow = tuple[Any, ...]


def job_tree(
    source: Connectable, root_job_id: str, *, schema: str = DEFAULT_SCHEMA
) -> JobNode | None:
    """The tree of jobs under ``root_job_id``, or ``None`` if no event or record carries
    that root.

    Each job carries its records (``attempts``): status, real start and end, error. A
    job that logged nothing but ended appears from its record; one that logged nothing
    itself but has children that did (a parent known only from ``parent_job_id``) appears
    with empty counts. Two indexed queries on ``root_job_id``: events and records (on a
    schema from before migration 0006, which has no records, the events alone).
    """
    events = sql.SQL(
        """
        SELECT job_id,
               (array_agg(parent_job_id ORDER BY id))[1] AS parent_job_id,
               (array_agg(job_name ORDER BY id))[1] AS job_name,
               category::text AS category,
               count(*) AS events,
               min(logged_at) AS first_at,
               max(logged_at) AS last_at
        FROM {}
        WHERE root_job_id = %s
        GROUP BY job_id, category
        """
    ).format(_table(schema))
    records = sql.SQL("SELECT {} FROM {} WHERE root_job_id = %s ORDER BY attempt, id").format(
        _RECORD_COLUMNS, _job_table(schema)
    )
    with _connection(source) as conn, conn.cursor() as cur:
        rows = cur.execute(events, (root_job_id,)).fetchall()
        found = []
        if _has_job_table(conn, schema):
            found = cur.execute(records, (root_job_id,)).fetchall()
    return _tree_from_rows(rows, root_job_id, found)


def job_records(
    source: Connectable, job_id: str, *, schema: str = DEFAULT_SCHEMA
) -> list[JobAttempt]:
    """The records of one job in attempt order (none while it is unfinished): one indexed
    query, for a view that has the job's tree already and wants its attempts' details."""
    query = sql.SQL("SELECT {} FROM {} WHERE job_id = %s ORDER BY attempt, id").format(
        _RECORD_COLUMNS, _job_table(schema)
    )
    with _connection(source) as conn:
        if not _has_job_table(conn, schema):
            return []
        return [_attempt(record) for record in conn.execute(query, (job_id,)).fetchall()]


TreeRow = tuple[str, str | None, str | None, str, int, dt.datetime, dt.datetime]


def _attempt(record: RecordRow) -> JobAttempt:
    return JobAttempt(*record[3:])


def _tree_from_rows(
    rows: Sequence[TreeRow], root_job_id: str, records: Sequence[RecordRow] = ()
) -> JobNode | None:
    """Assemble a tree from per-(job, category) rows: ``(job_id, parent_job_id, job_name,
    category, events, first_at, last_at)``, and the tree's records (``_RECORD_COLUMNS``, in
    attempt order). The benchmark's recursive-CTE variant uses it too, so both are measured
    with the same Python work."""
    if not rows and not records:
        return None
    nodes: dict[str, JobNode] = {}
    for job_id, parent_job_id, name, category, events, first_at, last_at in rows:
        node = nodes.get(job_id)
        if node is None:
            nodes[job_id] = JobNode(
                job_id, name, parent_job_id, {category: events}, first_at, last_at
            )
            continue
        node.counts[category] = events
        node.first_at = min(node.first_at, first_at)
        node.last_at = max(node.last_at, last_at)
    for record in records:
        job_id, parent_job_id, name = record[0], record[1], record[2]
        attempt = _attempt(record)
        node = nodes.get(job_id)
        if node is None:  # a job that logged nothing: known from its record alone
            node = nodes[job_id] = JobNode(
                job_id, name, parent_job_id, {}, attempt.started_at, attempt.ended_at
            )
        elif not node.events:
            node.first_at = min(node.first_at, attempt.started_at)
            node.last_at = max(node.last_at, attempt.ended_at)
        node.name = node.name or name
        node.parent_job_id = node.parent_job_id or parent_job_id
        node.attempts.append(attempt)
    root = nodes.get(root_job_id)
    if root is None:  # the root job logged nothing itself and has no record yet
        first = min(node.first_at for node in nodes.values())
        last = max(node.last_at for node in nodes.values())
        root = nodes[root_job_id] = JobNode(root_job_id, None, None, {}, first, last)
    for node in list(nodes.values()):
        if node is root:
            continue
        parent_id = node.parent_job_id or root_job_id
        parent = nodes.get(parent_id)
        if parent is None:  # an intermediate job without rows of its own
            parent = nodes[parent_id] = JobNode(
                parent_id, None, root_job_id, {}, node.first_at, node.last_at
            )
            root.children.append(parent)
        parent.children.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda child: (child.started_at, child.job_id))
    return root


@attrs.frozen
class Run:
    """One root job as ``llamalog runs`` lists it: the tree's record and its totals."""

    job_id: str
    name: str | None
    #: The root's final status, or :data:`UNFINISHED` (no final record yet).
    status: str
    started_at: dt.datetime
    #: ``None`` while the run is unfinished.
    ended_at: dt.datetime | None
    #: Real duration from the root's records; unfinished: the span of its tree so far.
    seconds: float
    #: Records of the root job (attempts); 0 while it has none.
    attempts: int
    #: Events of the whole tree.
    events: int
    #: Failed jobs of the tree, the root included (as :attr:`JobNode.failed` says).
    failures: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: times as ISO 8601 strings."""
        fields = attrs.asdict(self)
        fields["started_at"] = self.started_at.isoformat()
        fields["ended_at"] = _iso(self.ended_at)
        return fields


def runs(
    source: Connectable,
    *,
    since: dt.datetime | None = None,
    failed: bool = False,
    name: str | None = None,
    limit: int = 20,
    until: dt.datetime | None = None,
    status: str | None = None,
    root: str | None = None,
    offset: int = 0,
    schema: str = DEFAULT_SCHEMA,
) -> list[Run]:
    """Root jobs, the newest start first: at most ``limit``, after skipping ``offset``.

    ``since``: only runs with activity since then (ended, or logged an event; an
    unfinished run has no record, so its events count). ``until``: only runs that started
    by then. ``failed``: only runs with a failed job anywhere in their tree. ``status``:
    only runs whose root has that status (``succeeded``, ``failed``, ``cancelled`` or
    :data:`UNFINISHED`). ``name``: only roots of that name; ``root``: only that root.
    Roots that logged events but have no record yet are listed as :data:`UNFINISHED`,
    placed by their first event within the window. A run starts when its first attempt
    started.

    Three statements, so that the totals of a tree (its events, its failures) are counted
    for the runs shown only, and each lookup is planned with its real bounds. First the
    ``limit`` newest runs with a record, from the root records (``llama_job_roots_idx``);
    then those without one (still running, or killed), from the events logged since the
    oldest run picked so far (by the index on ``logged_at``: a run that logged before then
    started before it, and is no newer than those picked); then the totals of the newest
    ``limit`` of both. ``failed`` picks among the roots of the failed jobs, read first.
    """
    jobs, log = _job_table(schema), _table(schema)
    params: dict[str, Any] = {
        "since": since,
        "until": until,
        "name": name,
        "status": status,
        "root": root,
        "limit": limit + offset,
        "failing": None,
        "unfinished": UNFINISHED,
    }
    with _connection(source) as conn, conn.transaction():
        # The planner's estimate for the per-run lookups passes jit_above_cost, and
        # compiling them took 1.5-2.7 s for a query that runs in 30 ms (bench_queries.py).
        conn.execute("SET LOCAL jit = off")
        if failed:
            found = conn.execute(_FAILING_ROOTS.format(jobs=jobs, log=log)).fetchall()
            params["failing"] = [failing for (failing,) in found]
        recorded = conn.execute(_RECORDED_RUNS.format(jobs=jobs), params).fetchall()
        horizon = recorded[-1][1] if recorded and len(recorded) >= limit + offset else None
        unrecorded = []
        if status in (None, UNFINISHED):  # a run without a record is unfinished
            if root is not None:
                recent: sql.Composable = _ONE_ROOT
            elif failed and horizon is None and since is None:
                recent = _FAILING
            else:
                recent = _RECENT_ROOTS.format(log=log)
            unrecorded = conn.execute(
                _UNRECORDED_RUNS.format(jobs=jobs, log=log, recent=recent),
                {**params, "horizon": horizon},
            ).fetchall()
        newest = sorted(recorded + unrecorded, key=lambda run: (run[1], run[0]), reverse=True)
        picked = newest[offset : offset + limit]
        if not picked:
            return []
        totals = conn.execute(
            _RUN_TOTALS.format(jobs=jobs, log=log),
            {"roots": [run[0] for run in picked], "starts": [run[1] for run in picked]},
        ).fetchall()
    return [_run(*row) for row in totals]


# Roots of a failed job, as JobNode.failed says: a failed record, or a FAILED event of a job
# without a final record.
_FAILING_ROOTS = sql.SQL(
    """
    SELECT root_job_id FROM {jobs} WHERE status = 'failed'
    UNION
    SELECT failed.root_job_id FROM {log} failed
    WHERE failed.category = 'FAILED' AND failed.root_job_id IS NOT NULL
      AND NOT EXISTS (SELECT FROM {jobs} ended WHERE ended.job_id = failed.job_id
                      AND ended.status <> 'retried')
    """
)

# The newest runs with a record, each once, at its first attempt's start; a root whose last
# record says "retried" runs again: unfinished, as Run says.
_RECORDED_RUNS = sql.SQL(
    """
    SELECT job_id, min(started_at) AS started FROM {jobs}
    WHERE parent_job_id IS NULL
      AND (%(name)s::text IS NULL OR job_name = %(name)s)
      AND (%(root)s::text IS NULL OR job_id = %(root)s)
      AND (%(failing)s::text[] IS NULL OR job_id IN (SELECT unnest(%(failing)s::text[])))
    GROUP BY job_id
    HAVING (%(since)s::timestamptz IS NULL OR max(ended_at) >= %(since)s)
       AND (%(until)s::timestamptz IS NULL OR min(started_at) <= %(until)s)
       AND (%(status)s::text IS NULL OR coalesce(nullif(
                (array_agg(status ORDER BY attempt DESC, id DESC))[1], 'retried'),
                %(unfinished)s) = %(status)s)
    ORDER BY started DESC, job_id DESC LIMIT %(limit)s
    """
)

# Runs without a record (in the window): placed by their first event there. ``{recent}``
# names the roots to look at: those that logged since the horizon (the oldest start the
# recorded runs left among the newest) and the window's start, or, with neither bound,
# the failing roots when only those are asked for.
_UNRECORDED_RUNS = sql.SQL(
    """
    SELECT root, started FROM (
        SELECT candidate.root, (
            -- FILTER, not WHERE: a second condition here made the planner AND two indexes
            SELECT min(logged_at) FILTER (
                WHERE logged_at >= coalesce(%(since)s::timestamptz, '-infinity'))
            FROM {log} events WHERE events.root_job_id = candidate.root
        ) AS started
        FROM (
            SELECT recent.root FROM ({recent}) recent
            WHERE NOT EXISTS (
                    SELECT FROM {jobs} record
                    WHERE record.job_id = recent.root AND record.parent_job_id IS NULL
                      AND (%(since)s::timestamptz IS NULL OR record.ended_at >= %(since)s))
              AND (%(failing)s::text[] IS NULL
                   OR recent.root IN (SELECT unnest(%(failing)s::text[])))
              AND (%(name)s::text IS NULL OR (
                    SELECT job_name FROM {log} named
                    WHERE named.job_id = recent.root AND named.job_name IS NOT NULL
                    LIMIT 1) = %(name)s)
            OFFSET 0  -- a fence: the start below is looked up for the roots left only
        ) candidate
    ) placed
    WHERE started >= coalesce(%(horizon)s::timestamptz, '-infinity')
      AND started <= coalesce(%(until)s::timestamptz, 'infinity')
    """
)
_RECENT_ROOTS = sql.SQL(
    """
    SELECT DISTINCT root_job_id AS root FROM {log}
    WHERE root_job_id IS NOT NULL
      AND logged_at >= coalesce(
          greatest(%(horizon)s::timestamptz, %(since)s::timestamptz), '-infinity')
    OFFSET 0  -- a fence: the failing roots filter the few found, not the index scan
    """
)
_FAILING = sql.SQL("SELECT unnest(%(failing)s::text[]) AS root")
_ONE_ROOT = sql.SQL("SELECT %(root)s::text AS root")

# The totals of the runs picked, in the order given.
_RUN_TOTALS = sql.SQL(
    """
    SELECT picked.root, coalesce(record.job_name, event.job_name), last.status, last.ended_at,
           first.started_at, first.attempts, ev.events, ev.first_at, ev.last_at,
           failures.failed, tree.last_ended
    FROM unnest(%(roots)s::text[], %(starts)s::timestamptz[]) WITH ORDINALITY
         AS picked (root, started, position)
    LEFT JOIN LATERAL (
        SELECT job_name FROM {jobs} WHERE job_id = picked.root
        ORDER BY attempt DESC, id DESC LIMIT 1
    ) record ON true
    LEFT JOIN LATERAL (
        SELECT job_name FROM {log} WHERE job_id = picked.root AND job_name IS NOT NULL LIMIT 1
    ) event ON true
    LEFT JOIN LATERAL (
        SELECT status, ended_at FROM {jobs} WHERE job_id = picked.root
        ORDER BY attempt DESC, id DESC LIMIT 1
    ) last ON true
    LEFT JOIN LATERAL (
        SELECT min(started_at) AS started_at, count(*) AS attempts
        FROM {jobs} WHERE job_id = picked.root
    ) first ON true
    LEFT JOIN LATERAL (
        SELECT count(*) AS events, min(logged_at) AS first_at, max(logged_at) AS last_at
        FROM {log} WHERE root_job_id = picked.root
    ) ev ON true
    LEFT JOIN LATERAL (
        SELECT max(ended_at) AS last_ended FROM {jobs} WHERE root_job_id = picked.root
    ) tree ON true
    LEFT JOIN LATERAL (  -- failed as JobNode.failed says: by record, else by event
        SELECT count(*) AS failed FROM (
            SELECT job_id FROM {jobs} WHERE root_job_id = picked.root AND status = 'failed'
            UNION
            SELECT failed.job_id FROM {log} failed
            WHERE failed.root_job_id = picked.root AND failed.category = 'FAILED'
              AND NOT EXISTS (SELECT FROM {jobs} ended WHERE ended.job_id = failed.job_id
                              AND ended.status <> 'retried')
        ) jobs
    ) failures ON true
    ORDER BY picked.position
    """
)


def _run(  # noqa: PLR0917 - one row of the runs query
    root: str,
    name: str | None,
    last_status: str | None,
    last_ended: dt.datetime | None,
    started: dt.datetime | None,
    attempts: int,
    events: int,
    first_event: dt.datetime | None,
    last_event: dt.datetime | None,
    failures: int,
    tree_ended: dt.datetime | None,
) -> Run:
    finished = last_status is not None and last_status != "retried"
    start = started or first_event
    assert start is not None  # a root has a record or an event, else it is no candidate
    if finished:
        assert last_ended is not None
        end: dt.datetime = last_ended
    else:
        end = max(time for time in (last_event, tree_ended, start) if time is not None)
    return Run(
        job_id=root,
        name=name,
        status=last_status if finished and last_status else UNFINISHED,
        started_at=start,
        ended_at=last_ended if finished else None,
        seconds=max(0.0, (end - start).total_seconds()),
        attempts=attempts,
        events=events,
        failures=failures,
    )


@attrs.frozen
class LogStatus:
    """What :func:`status` found: the events in all, by category, and the distinct roots."""

    #: Every row of ``llama_log``.
    events: int
    #: Events per category, the most frequent first (ties by name); categories without rows
    #: are left out.
    by_category: tuple[tuple[str, int], ...]
    #: Distinct ``root_job_id`` values (rows logged outside any job have none).
    root_jobs: int


def status(source: Connectable, *, schema: str = DEFAULT_SCHEMA) -> LogStatus:
    """Counts over the whole table, as ``llamalog status`` prints them; reads it once."""
    table = _table(schema)
    with _connection(source) as conn:
        counts = conn.execute(
            sql.SQL("SELECT category::text, count(*) FROM {} GROUP BY 1 ORDER BY 2 DESC, 1").format(
                table
            )
        ).fetchall()
        roots = conn.execute(
            sql.SQL("SELECT count(DISTINCT root_job_id) FROM {}").format(table)
        ).fetchone()
    by_category = tuple((str(category), int(count)) for category, count in counts)
    return LogStatus(
        events=sum(count for _, count in by_category),
        by_category=by_category,
        root_jobs=int(roots[0]) if roots else 0,
    )
