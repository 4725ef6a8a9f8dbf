"""What waits in spill files, per target, for ``llamalog status`` and ``llamalog migrate``.

Reads only what the spill format (format 1, docs/design.md section 8) promises: one
directory per target under the spill root, file names that start with the time their
batch was taken (nanoseconds), a first line naming the target, then one record a line.
Replaying is the writer's job, not this module's: opening a ``LlamaLogger`` for a target
replays its files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from pathlib import Path

import attrs

from .._pipeline import default_spill_root
from .._pipeline.spill import SpillFile, set_aside_files, taken_at, waiting_files

__all__ = ["SpillTarget", "waiting_spill_files"]

# A job record's line: its end time, then the marker where an event has its category.
_JOB_LINE = re.compile(r'\[-?\d+, ?"JOB"')


@attrs.frozen
class SpillTarget:
    """The spill files waiting for one target database and schema."""

    directory: Path
    #: host, port, dbname and schema, from the newest file's first line (empty if unknown).
    target: dict[str, str]
    #: Files waiting to be replayed (claimed ones included: a live process is replaying them,
    #: or the next logger will).
    files: int
    events: int
    jobs: int
    #: When the oldest waiting batch was taken from its queue.
    oldest: dt.datetime | None
    #: Files set aside as unreadable or refused, kept for a person to look at.
    set_aside: int

    def label(self) -> str:
        """``host:port/dbname schema S``, or the directory's name if no file says."""
        target = self.target
        if not target:
            return self.directory.name
        return (
            f"{target.get('host', '?')}:{target.get('port', '?')}/{target.get('dbname', '?')} "
            f"schema {target.get('schema', '?')}"
        )


def waiting_spill_files(root: Path | None = None) -> list[SpillTarget]:
    """Every target under ``root`` (default: the per-user spill root) with waiting or
    set-aside files, the oldest waiting first."""
    root = default_spill_root() if root is None else root
    try:
        directories = [path for path in root.iterdir() if path.is_dir()]
    except OSError:  # no spill root yet: nothing ever spilled here
        return []
    found = [summary for path in directories if (summary := _summary(path)) is not None]
    far_future = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(found, key=lambda summary: (summary.oldest or far_future, summary.label()))


def _summary(directory: Path) -> SpillTarget | None:
    try:
        waiting = sorted((spilled for spilled, _ in waiting_files(directory)), key=_spill_id)
        set_aside = set_aside_files(directory)
    except OSError:
        return None
    if not waiting and not set_aside:
        return None
    events = jobs = 0
    target: dict[str, str] = {}
    for spilled in waiting:
        try:
            file_events, file_jobs, header = _count(spilled.path)
        except OSError:
            continue  # replayed and removed while we looked
        events += file_events
        jobs += file_jobs
        target = header or target
    for path in set_aside[:1] if not target else ():  # their first line names it too
        with contextlib.suppress(OSError), path.open(encoding="utf-8", errors="replace") as file:
            target = _target(file.readline())
    oldest = taken_at(waiting[0].spill_id) if waiting else None
    return SpillTarget(directory, target, len(waiting), events, jobs, oldest, len(set_aside))


def _spill_id(spilled: SpillFile) -> str:
    return spilled.spill_id


def _count(path: Path) -> tuple[int, int, dict[str, str]]:
    """Events and job records of one file, and the target its first line names."""
    events = jobs = 0
    target: dict[str, str] = {}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines):
            if number == 0 and line.startswith("{"):
                target = _target(line)
            elif _JOB_LINE.match(line):
                jobs += 1
            elif line.strip():
                events += 1
    return events, jobs, target


def _target(line: str) -> dict[str, str]:
    try:
        header = json.loads(line)
    except ValueError:
        return {}
    target = header.get("target") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in target.items()} if isinstance(target, dict) else {}
