"""One function per ``llamalog`` subcommand: each takes the parsed arguments and a DSN.

They reach the database through :mod:`llamalogger.schema` (migrations, versions, the
backfill) and :mod:`llamalogger.queries` (everything they read), never with SQL of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg

from .. import LlamaLogger, queries, schema
from .._conninfo import masked_conninfo, schema_from_env
from .._errors import LlamaLogError, SchemaNotMigrated
from ._escape import json_text, visible
from ._render import render_event, render_job, render_runs, render_tree, status_text
from ._serve import serve_command, write_tree_html
from ._spill_report import SpillTarget, waiting_spill_files

__all__ = ["COMMANDS", "NothingFound"]


class NothingFound(LlamaLogError):
    """A query the user asked for found nothing (unknown root, entity without events)."""


@contextlib.contextmanager
def _migrated(dsn: str, name: str) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """An autocommit connection to a schema at the newest version, and that version."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn, schema.require_current(conn, name)


def _json_line(row: dict[str, Any]) -> str:
    return json_text(row)


def _unknown_job(job_id: str, name: str) -> NothingFound:
    return NothingFound(
        f"no job '{visible(job_id)}' in schema {name!r}: no event, record or tree names it"
    )


def migrate_command(args: argparse.Namespace, dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if args.dry_run:
            print(schema.plan_migration(conn, schema=args.schema, target=args.target))
            return 0
        # Progress goes to standard error, so standard output stays the report.
        result = schema.migrate(
            conn,
            schema=args.schema,
            target=args.target,
            lock_timeout=args.lock_timeout,
            lock_retries=args.lock_retries,
            wait=args.wait,
            batch_seconds=args.batch_seconds,
            progress=schema.ProgressDisplay(),
        )
    for migration in result.applied:
        print(f"applied {migration.version} {migration.name}")
    if result.backfill is not None:
        print(result.backfill)
    if not result.applied:
        print(f"schema {args.schema} is up to date (version {result.version})")
    if result.version == schema.LATEST_VERSION:
        _replay_spill_files(dsn, args.schema)
    return 0


def _waiting_for(name: str) -> list[SpillTarget]:
    return [spilled for spilled in waiting_spill_files() if spilled.target.get("schema") == name]


def _replay_spill_files(dsn: str, name: str) -> None:
    """Replay the spill files waiting for this schema, now that it is current.

    The writer does the replay: a logger opened for the target replays its files at once
    and finishes them when closed (bounded by ``exit_timeout``).
    """
    before = _waiting_for(name)
    if not any(spilled.files for spilled in before):
        return
    logger = LlamaLogger(dsn, schema=name)
    logger.close()
    replayed = logger.stats()["replayed"]  # records: events and job records
    after = _waiting_for(name)
    events = sum(s.events for s in before) - sum(s.events for s in after)
    jobs = sum(s.jobs for s in before) - sum(s.jobs for s in after)
    if events + jobs == replayed:
        print(
            f"replayed {_count(events, 'event')} and {_count(jobs, 'job record')} from spill files"
        )
    else:  # another process wrote or replayed files meanwhile: the writer's own count
        print(f"replayed {_count(replayed, 'record')} (events and job records) from spill files")
    for spilled in after:
        if spilled.files:
            print(f"still waiting: {_spill_line(spilled)}")


def backfill_command(args: argparse.Namespace, dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not schema.backfill_available(conn, args.schema):
            raise SchemaNotMigrated(
                f"schema {args.schema!r} has no root_job_id yet: run `llamalog migrate`"
            )
        report = schema.backfill_root_job_id(
            conn,
            schema=args.schema,
            batch_seconds=args.batch_seconds,
            progress=schema.ProgressDisplay(),
        )
    print(report)
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _seconds_text(when: dt.datetime) -> str:
    return when.isoformat(sep=" ", timespec="seconds")


def _spill_line(spilled: SpillTarget) -> str:
    oldest = (
        "-" if spilled.oldest is None else spilled.oldest.isoformat(sep=" ", timespec="seconds")
    )
    line = (
        f"{visible(spilled.label())}: {_count(spilled.files, 'file')}, "
        f"{_count(spilled.events, 'event')}, {_count(spilled.jobs, 'job record')}, "
        f"oldest {oldest}"
    )
    if spilled.set_aside:
        where = visible(spilled.directory)
        line += f"; {spilled.set_aside} set aside (unreadable or refused) in {where}"
    return line


def _print_spill_files() -> None:
    waiting = waiting_spill_files()
    if not waiting:
        print("spill files: none waiting")
        return
    print("spill files waiting (the next logger of their target replays them; so does migrate):")
    for spilled in waiting:
        print("  " + _spill_line(spilled))


def status_command(args: argparse.Namespace, dsn: str) -> int:
    try:
        with _migrated(dsn, args.schema) as (conn, version):
            counts = queries.status(conn, schema=args.schema)
            last = queries.recent_events(conn, limit=args.last, schema=args.schema)
    except (SchemaNotMigrated, psycopg.OperationalError):
        _print_spill_files()  # what waits on disk matters most when the database is not ready
        raise
    print(f"schema {args.schema}: version {version} (this llamalog: {schema.LATEST_VERSION})")
    by_category = ", ".join(f"{category} {count}" for category, count in counts.by_category)
    print(f"events: {counts.events}" + (f" ({by_category})" if by_category else ""))
    print(f"root jobs: {counts.root_jobs} (list them: llamalog runs)")
    _print_spill_files()
    if last:
        print(f"last {len(last)} events:")
        for row in last:
            print("  " + render_event(row))
    return 0


def runs_command(args: argparse.Namespace, dsn: str) -> int:
    since = None if args.since is None else dt.datetime.now(dt.UTC) - args.since
    with _migrated(dsn, args.schema) as (conn, _):
        found = queries.runs(
            conn,
            since=since,
            failed=args.failed,
            name=args.name,
            limit=args.last,
            schema=args.schema,
        )
    if args.json:
        print(json_text([run.to_dict() for run in found], indented=True))
        return 0
    if not found:
        window = (
            "ever" if since is None else f"since {since.isoformat(sep=' ', timespec='seconds')}"
        )
        kind = " failed" if args.failed else ""
        named = f" named '{visible(args.name)}'" if args.name else ""
        print(f"no{kind} runs{named} {window}")
        return 0
    for line in render_runs(found):
        print(line)
    return 0


def _tree_dict(node: queries.JobNode, *, asked: str, only_failed: bool) -> dict[str, Any]:
    """``node.to_dict()``, pruned to its failing branches if asked, the asked job marked."""

    def pruned(job: queries.JobNode) -> queries.JobNode:
        kept = [pruned(child) for child in job.children if child.failures or not only_failed]
        return attrs.evolve(job, children=kept)

    as_dict = (pruned(node) if only_failed else node).to_dict()
    stack = [as_dict]
    while stack:
        job = stack.pop()
        if job["job_id"] == asked:
            job["asked"] = True
        stack.extend(job["children"])
    return as_dict


def tree_command(args: argparse.Namespace, dsn: str) -> int:
    with _migrated(dsn, args.schema) as (conn, _):
        root = queries.root_of(conn, args.job_id, schema=args.schema)
        tree = None if root is None else queries.job_tree(conn, root, schema=args.schema)
    if tree is None:
        raise _unknown_job(args.job_id, args.schema)
    if args.html:
        write_tree_html(tree, args.job_id, args.html)
        return 0
    if args.json:
        print(
            json_text(_tree_dict(tree, asked=args.job_id, only_failed=args.failed), indented=True)
        )
        return 0
    if tree.job_id != args.job_id:
        print(f"job {visible(args.job_id)} is in the tree of root {visible(tree.job_id)}:")
    lines = render_tree(
        tree, max_children=args.max_children, only_failed=args.failed, asked=args.job_id
    )
    for line in lines:
        print(line)
    return 0


def show_command(args: argparse.Namespace, dsn: str) -> int:
    with _migrated(dsn, args.schema) as (conn, _):
        root = queries.root_of(conn, args.job_id, schema=args.schema)
        tree = None if root is None else queries.job_tree(conn, root, schema=args.schema)
        node = None if tree is None else tree.find(args.job_id)
        if tree is None or node is None:
            raise _unknown_job(args.job_id, args.schema)
        events = queries.job_events(conn, args.job_id, limit=args.events, schema=args.schema)
        failed = queries.job_events(conn, args.job_id, category="FAILED", schema=args.schema)
    parent = next((job for job in tree.walk() if node in job.children), None)
    traceback = next(
        (
            str(event["details"]["exception"])
            for event in reversed(failed)
            if isinstance(event.get("details"), dict) and event["details"].get("exception")
        ),
        None,
    )
    if args.json:
        as_dict = node.to_dict()
        as_dict["children"] = [child.job_id for child in node.children]
        as_dict["parent"] = (
            None if parent is None else {"job_id": parent.job_id, "name": parent.name}
        )
        as_dict["root"] = {"job_id": tree.job_id, "name": tree.name}
        as_dict["event_rows"] = events
        as_dict["traceback"] = traceback
        print(json_text(as_dict, indented=True))
        return 0
    lines = render_job(
        node,
        parent=parent,
        root=tree,
        events=events,
        total_events=node.events,
        traceback=traceback,
    )
    for line in lines:
        print(line)
    return 0


def history_command(args: argparse.Namespace, dsn: str) -> int:
    with _migrated(dsn, args.schema) as (conn, _):
        rows = queries.entity_history(conn, args.entity_type, args.entity_id, schema=args.schema)
    if not rows:
        raise NothingFound(f"no events about {args.entity_type} {args.entity_id}")
    for row in rows:
        print(_json_line(row) if args.json else render_event(row))
    return 0


def _check_tail_root(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    """A root nothing names yet is an error with ``--no-follow``; when following it is
    said once and followed anyway (a tail started before its run is a normal use). A
    child job's id is an error naming its root."""
    root = queries.root_of(conn, args.root, schema=args.schema)
    if root is None and args.no_follow:
        raise NothingFound(f"no job or run '{visible(args.root)}' in schema {args.schema!r}")
    if root is None:
        print(
            f"llamalog: no job or run '{visible(args.root)}' yet; following it anyway "
            "(Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )
    elif root != args.root:
        raise NothingFound(
            f"'{visible(args.root)}' is not a root job: its root is '{visible(root)}'"
        )


def tail_command(args: argparse.Namespace, dsn: str) -> int:
    with _migrated(dsn, args.schema) as (conn, _):
        if args.root is not None:
            _check_tail_root(conn, args)
        rows = queries.recent_events(
            conn, limit=args.last, root_job_id=args.root, schema=args.schema
        )
        last_id = rows[-1]["id"] if rows else 0
        for row in rows:
            print(render_event(row), flush=True)
        while not args.no_follow:
            time.sleep(args.interval)
            rows = queries.recent_events(
                conn, limit=1000, root_job_id=args.root, after_id=last_id, schema=args.schema
            )
            for row in rows:
                print(render_event(row), flush=True)
                last_id = row["id"]
    return 0


def _again(args: argparse.Namespace, *command: str) -> str:
    """A command that runs ``llamalog COMMAND`` again from here: ``llamalog`` if that is
    this installation's on PATH, else this Python (relative to the current directory when
    inside it) with ``-m llamalogger.cli``; with the ``--dsn`` and ``--schema`` of this run."""
    here = Path(sys.executable).parent
    on_path = shutil.which("llamalog")
    if on_path is not None and Path(on_path).parent.resolve() == here.resolve():
        words = ["llamalog"]
    else:
        python = Path(sys.executable)
        with contextlib.suppress(ValueError):
            python = python.relative_to(Path.cwd())
        words = [str(python), "-m", "llamalogger.cli"]
    words += command
    if args.dsn:
        words += ["--dsn", masked_conninfo(args.dsn)]  # a password never reaches the screen
    if args.schema != schema_from_env():
        words += ["--schema", args.schema]
    return shlex.join(words)


def demo_command(args: argparse.Namespace, dsn: str) -> int:
    from ._demo import run_demo

    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.migrate(conn, schema=args.schema)
    result = run_demo(dsn, schema=args.schema, tracks=args.tracks)
    print(f"import {result.root_job_id}: job tree from root_job_id\n")
    # A small album is shown whole; a benchmark-sized one summarised.
    for line in render_tree(result.tree, max_children=20 if args.tracks <= 20 else 5):
        print(line)
    jobs = sum(1 for _ in result.tree.walk())
    print(
        f"\n{result.events} events in {jobs} jobs written in {result.seconds:.2f} s "
        f"from the first log call until flush() returned: "
        f"{result.events_per_second:,.0f} events/s"
        + ("" if result.flushed else " (flush timed out!)")
    )
    failed = result.tree.find(result.failed_job_id)
    retried = result.tree.find(result.retried_job_id)
    if failed is not None:
        error = ": ".join(part for part in (failed.error_type, failed.error_message) if part)
        print(f"failed:  {failed.name} {failed.job_id}" + (f"  {error}" if error else ""))
    if retried is not None:
        shown = status_text(retried.status, len(retried.attempts))
        print(f"retried: {retried.name} {retried.job_id}  {shown}")
    print("\nsee it again, with the same set-up:")
    print("  " + _again(args, "runs"))
    print("  " + _again(args, "tree", result.root_job_id, "--failed"))
    print("  " + _again(args, "show", result.failed_job_id))
    return 0 if result.flushed else 1


COMMANDS: dict[str, Callable[[argparse.Namespace, str], int]] = {
    "migrate": migrate_command,
    "backfill": backfill_command,
    "status": status_command,
    "runs": runs_command,
    "tree": tree_command,
    "show": show_command,
    "history": history_command,
    "tail": tail_command,
    "demo": demo_command,
    "serve": serve_command,
}
