"""Hierarchy queries over ``llama_log``: an import's events, its job tree, a job's chain
of ancestors, and an entity's history.

Every function takes a psycopg connection (or a ``ConnectionPool``, from which it
borrows one). The tree and the chain are read with one indexed query on ``root_job_id``
and assembled in Python: storing the root on every row is what makes recursive SQL
unnecessary.
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
    "JobNode",
    "LogStatus",
    "entity_history",
    "job_chain",
    "job_tree",
    "logs_for_root",
    "recent_events",
    "status",
]

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


@attrs.define
class JobNode:
    """One job of a tree: its events by category, its time span and its child jobs."""

    job_id: str
    name: str | None
    parent_job_id: str | None
    counts: dict[str, int]
    first_at: dt.datetime
    last_at: dt.datetime
    children: list[JobNode] = attrs.field(factory=list)

    @property
    def events(self) -> int:
        return sum(self.counts.values())

    def walk(self) -> Iterator[JobNode]:
        """This job and all jobs below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: times as ISO 8601 strings, children nested."""
        return {
            "job_id": self.job_id,
            "name": self.name,
            "parent_job_id": self.parent_job_id,
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


def job_chain(source: Connectable, job_id: str, *, schema: str = DEFAULT_SCHEMA) -> list[JobNode]:
    """``job_id`` and its ancestors, nearest first, ending at the root; ``[]`` if unknown.

    Read from the job's tree (one indexed query on its ``root_job_id``). An ancestor that
    logged nothing appears with empty counts; above such a job the chain continues at the
    root, the only ancestor its rows still name.
    """
    query = sql.SQL("SELECT root_job_id FROM {} WHERE job_id = %s LIMIT 1").format(_table(schema))
    with _connection(source) as conn:
        row = conn.execute(query, (job_id,)).fetchone()
    if row is None or row[0] is None:
        return []
    tree = job_tree(source, row[0], schema=schema)
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


def job_tree(
    source: Connectable, root_job_id: str, *, schema: str = DEFAULT_SCHEMA
) -> JobNode | None:
    """The tree of jobs under ``root_job_id``, or ``None`` if no row carries that root.

    A job that logged nothing itself but has children that did (a parent known only
    from ``parent_job_id``) appears with empty counts.
    """
    query = sql.SQL(
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
    with _connection(source) as conn, conn.cursor() as cur:
        rows = cur.execute(query, (root_job_id,)).fetchall()
    return _tree_from_rows(rows, root_job_id)


TreeRow = tuple[str, str | None, str | None, str, int, dt.datetime, dt.datetime]


def _tree_from_rows(rows: Sequence[TreeRow], root_job_id: str) -> JobNode | None:
    """Assemble a tree from per-(job, category) rows: ``(job_id, parent_job_id, job_name,
    category, events, first_at, last_at)``. The benchmark's recursive-CTE variant uses it
    too, so both are measured with the same Python work."""
    if not rows:
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
    root = nodes.get(root_job_id)
    if root is None:  # the root job logged nothing itself
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
        node.children.sort(key=lambda child: (child.first_at, child.job_id))
    return root


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
