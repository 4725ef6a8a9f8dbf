"""Rendering job trees and events as text for the terminal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..queries import JobNode

__all__ = ["render_event", "render_tree"]


def _describe(node: JobNode) -> str:
    counts = ", ".join(f"{category} {count}" for category, count in sorted(node.counts.items()))
    # The span of the whole subtree: a parent job lasts as long as its children's work.
    first = min(job.first_at for job in node.walk())
    last = max(job.last_at for job in node.walk())
    seconds = (last - first).total_seconds()
    name = node.name or "(unnamed job)"
    return f"{name} {node.job_id}  [{counts or 'no events'}]  {seconds * 1000:.1f} ms"


def render_tree(root: JobNode, *, max_children: int = 5) -> list[str]:
    """Lines of a box-drawing tree; beyond ``max_children`` siblings are summarised."""
    lines = [_describe(root)]

    def add_children(node: JobNode, prefix: str) -> None:
        shown = node.children[:max_children]
        hidden = node.children[max_children:]
        for index, child in enumerate(shown):
            last = index == len(shown) - 1 and not hidden
            lines.append(f"{prefix}{'└── ' if last else '├── '}{_describe(child)}")
            add_children(child, prefix + ("    " if last else "│   "))
        if hidden:
            jobs = sum(1 for child in hidden for _ in child.walk())
            events = sum(job.events for child in hidden for job in child.walk())
            lines.append(f"{prefix}└── … and {len(hidden)} more: {jobs} jobs, {events} events")

    add_children(root, "")
    return lines


def _entity_text(kind: object, ident: object) -> str:
    return f"{kind} {ident}" if kind is not None else ""


def render_event(row: Mapping[str, Any]) -> str:
    """One line per event: time, level, category, subject -> object, message, job."""
    logged_at = row["logged_at"]
    when = logged_at.isoformat(sep=" ", timespec="milliseconds")
    subject = _entity_text(row.get("entity_type"), row.get("entity_id"))
    related = _entity_text(row.get("related_type"), row.get("related_id"))
    about = f"{subject} -> {related}" if related else subject
    job = ""
    if row.get("job_id") is not None:
        job = f"  [{row.get('job_name') or 'job'} {row['job_id']}, root {row['root_job_id']}]"
    return (
        f"{when}  {str(row['level']).upper():7} {row['category']:8} "
        f"{about + '  ' if about else ''}{row['message']}{job}"
    )
