"""Hierarchy queries over ``llama_log``: one import's events and its tree of jobs.

Every function takes a psycopg connection (or a ``ConnectionPool``, from which it
borrows one) and reads with a single indexed query on ``root_job_id``: the point of
storing the root on every row is that no recursive SQL is needed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from ._errors import SchemaNotMigrated
from ._postgres import validate_schema

__all__ = ["JobNode", "job_tree", "logs_for_root"]

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


def logs_for_root(
    source: Connectable, root_job_id: str, *, schema: str = "llamalog"
) -> list[dict[str, Any]]:
    """Every event of one job tree (one import), in the order they were logged."""
    query = sql.SQL("SELECT * FROM {} WHERE root_job_id = %s ORDER BY logged_at, id").format(
        _table(schema)
    )
    with _connection(source) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (root_job_id,)).fetchall()


def job_tree(source: Connectable, root_job_id: str, *, schema: str = "llamalog") -> JobNode | None:
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
    if not rows:
        return None
    nodes: dict[str, JobNode] = {}
    for job_id, parent, name, category, events, first_at, last_at in rows:
        node = nodes.get(job_id)
        if node is None:
            nodes[job_id] = JobNode(job_id, name, parent, {category: events}, first_at, last_at)
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
