"""Rendering runs, job trees, jobs and events as text for the terminal.

Everything taken from the database goes through :func:`visible`: ids, names and messages
can come from a hostile message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from ..queries import UNFINISHED, JobNode, Run
from ._escape import json_text, visible

__all__ = [
    "duration_text",
    "render_event",
    "render_job",
    "render_runs",
    "render_tree",
    "status_text",
]

_ERROR_WIDTH = 160  # a failure message in a tree line or a runs row; `show` prints it whole
_ASKED = "  ◀ asked"


def duration_text(seconds: float) -> str:
    """``12.3 ms``, ``1.52 s``, ``2 min 03 s``, ``1 h 02 min``."""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def status_text(status: str, attempts: int) -> str:
    """A job's status as shown: ``running/unfinished``, ``succeeded after 2 attempts``."""
    if status == UNFINISHED:
        return "running/unfinished"
    return f"{status} after {attempts} attempts" if attempts > 1 else status


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.isoformat(sep=" ", timespec="milliseconds")


def _cut(text: str, width: int = _ERROR_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _error(kind: str | None, message: str | None) -> str:
    text = ": ".join(part for part in (kind, message) if part)
    return visible(text)


def _timing(node: JobNode) -> str:
    if node.status == UNFINISHED:
        return f"{duration_text(node.seconds)} of events so far"
    return duration_text(node.seconds)


def _describe(node: JobNode) -> str:
    counts = ", ".join(f"{category} {count}" for category, count in sorted(node.counts.items()))
    name = visible(node.name) if node.name else "(unnamed job)"
    line = (
        f"{name} {visible(node.job_id)}  {status_text(node.status, len(node.attempts))}  "
        f"{_timing(node)}  [{counts or 'no events'}]"
    )
    error = _error(node.error_type, node.error_message)
    return f"{line}  {_cut(error)}" if error and node.failed else line


def render_tree(
    root: JobNode,
    *,
    max_children: int = 5,
    only_failed: bool = False,
    asked: str | None = None,
) -> list[str]:
    """Lines of a box-drawing tree; beyond ``max_children`` siblings are summarised (with
    their failures counted). ``only_failed`` keeps the branches that hold a failure;
    ``asked`` marks that job."""

    def describe(node: JobNode) -> str:
        return _describe(node) + (_ASKED if node.job_id == asked else "")

    lines = [describe(root)]

    def add_children(node: JobNode, prefix: str) -> None:
        children = (
            [child for child in node.children if child.failures] if only_failed else node.children
        )
        shown = children[:max_children]
        hidden = children[max_children:]
        for index, child in enumerate(shown):
            last = index == len(shown) - 1 and not hidden
            lines.append(f"{prefix}{'└── ' if last else '├── '}{describe(child)}")
            add_children(child, prefix + ("    " if last else "│   "))
        if hidden:
            jobs = [job for child in hidden for job in child.walk()]
            events = sum(job.events for job in jobs)
            failed = sum(job.failed for job in jobs)
            marked = any(job.job_id == asked for job in jobs)
            lines.append(
                f"{prefix}└── … and {len(hidden)} more: {len(jobs)} jobs, {events} events, "
                f"{failed} failed" + (_ASKED if marked else "")
            )

    add_children(root, "")
    return lines


def render_runs(found: Sequence[Run]) -> list[str]:
    """A table of runs, one line each: start (UTC), status, duration, events, failed jobs,
    name and id."""
    lines = [
        f"{'STARTED (UTC)':19}  {'STATUS':26}  {'DURATION':>16}  {'EVENTS':>7}  {'FAILED':>6}  "
        "NAME  JOB"
    ]
    for run in found:
        timing = duration_text(run.seconds)
        if run.status == UNFINISHED:
            timing += " so far"
        name = visible(run.name) if run.name else "(unnamed job)"
        started = run.started_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"{started:19}  {status_text(run.status, run.attempts):26}  {timing:>16}  "
            f"{run.events:>7}  {run.failures:>6}  {name}  {visible(run.job_id)}"
        )
    return lines


def _entity_text(kind: object, ident: object) -> str:
    return f"{visible(kind)} {visible(ident)}" if kind is not None else ""


def render_event(row: Mapping[str, Any]) -> str:
    """One line per event: time, level, category, subject -> object, message, job."""
    when = _when(row["logged_at"])
    subject = _entity_text(row.get("entity_type"), row.get("entity_id"))
    related = _entity_text(row.get("related_type"), row.get("related_id"))
    about = f"{subject} -> {related}" if related else subject
    job = ""
    if row.get("job_id") is not None:
        name = visible(row.get("job_name") or "job")
        job = f"  [{name} {visible(row['job_id'])}, root {visible(row['root_job_id'])}]"
    return (
        f"{when}  {visible(str(row['level']).upper()):7} {visible(row['category']):8} "
        f"{about + '  ' if about else ''}{visible(row['message'])}{job}"
    )


def _named(node: JobNode | None) -> str:
    if node is None:
        return "-"
    return f"{visible(node.job_id)} {visible(node.name) if node.name else '(unnamed job)'}"


def render_job(
    node: JobNode,
    *,
    parent: JobNode | None,
    root: JobNode,
    events: Sequence[Mapping[str, Any]],
    total_events: int,
    traceback: str | None,
) -> list[str]:
    """``llamalog show``: the job's record, where it sits, its events and its traceback."""
    name = visible(node.name) if node.name else "(unnamed job)"
    record = node.attempts[-1] if node.attempts else None
    lines = [f"job {visible(node.job_id)}  {name}"]

    def field(label: str, value: str) -> None:
        lines.append(f"  {label:10} {value}")

    field("status", status_text(node.status, len(node.attempts)))
    field("started", _when(node.started_at) + ("" if node.attempts else " (first event)"))
    field("ended", _when(node.ended_at))
    field("duration", _timing(node))
    if node.error_type or node.error_message:
        field("error", _error(node.error_type, node.error_message))
    if record is not None:
        field("process", f"pid {record.pid} on {visible(record.host or '?')}")
        if record.entity_type is not None:
            field("entity", _entity_text(record.entity_type, record.entity_id))
        if record.details:
            field("details", json_text(record.details))
    else:
        field("record", "none: the job has not ended, or its process was killed")
    field("parent", _named(parent) if node is not root else "- (a root job)")
    field("root", _named(root))
    if len(node.attempts) > 1:
        lines.append("  attempts")
        for attempt in node.attempts:
            error = _error(attempt.error_type, attempt.error_message)
            lines.append(
                f"    {attempt.attempt:>3}  {attempt.status:10} {_when(attempt.started_at)}  "
                f"{duration_text(attempt.seconds):>10}  pid {attempt.pid}"
                + (f"  {error}" if error else "")
            )
    failed_children = sum(child.failures > 0 for child in node.children)
    field(
        "children",
        f"{len(node.children)}"
        + (f" ({failed_children} with failures)" if failed_children else ""),
    )
    more = total_events - len(events)
    lines.append(f"  events     {total_events}" + (f" (the first {len(events)})" if more else ""))
    lines.extend("    " + render_event(event) for event in events)
    if traceback:
        lines.append("  traceback of its FAILED event")
        lines.extend("    " + visible(line) for line in traceback.rstrip("\n").split("\n"))
    return lines
