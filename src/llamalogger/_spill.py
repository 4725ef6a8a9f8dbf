"""Spill files: batches kept on local disk while the database is unreachable.

One file per batch, written to a temporary name, fsynced and renamed, so a file that
exists is complete. Names start with the time in nanoseconds, so sorting them replays
batches in the order they were spilled, across processes and restarts. Rows are stored
in their cleaned COPY form as JSON lines; the file name is the id that makes a replay
happen exactly once (see migration 0003).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

__all__ = ["SpillDir"]

_SUFFIX = ".jsonl"


class SpillDir:
    """A directory of spill files."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count()

    def write(self, rows: list[tuple[object, ...]]) -> Path:
        """Store ``rows`` durably in a new spill file and return its path."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._counter):06d}{_SUFFIX}"
        final = self.path / name
        partial = self.path / (name + ".partial")
        with partial.open("w", encoding="utf-8") as file:
            for row in rows:
                file.write(json.dumps(_to_json(row), ensure_ascii=False) + "\n")
            file.flush()
            os.fsync(file.fileno())
        partial.replace(final)
        _fsync_directory(self.path)
        return final

    def pending(self) -> list[Path]:
        """Complete spill files, oldest first."""
        return sorted(self.path.glob("*" + _SUFFIX))

    def read(self, file: Path) -> list[tuple[object, ...]]:
        with file.open(encoding="utf-8") as lines:
            return [_from_json(json.loads(line)) for line in lines if line.strip()]

    def set_aside(self, file: Path, why: str) -> Path:
        """Move a file that cannot be replayed out of the way, keeping it for a person."""
        target = file.with_name(file.name + f".{why}")
        file.replace(target)
        return target

    @staticmethod
    def spill_id(file: Path) -> str:
        return file.name.removesuffix(_SUFFIX)


def _to_json(row: tuple[object, ...]) -> list[object]:
    details = row[12]
    encoded = (
        details[1:].decode() if isinstance(details, bytes) else None
    )  # drop jsonb's version byte
    return [*row[:12], encoded]


def _from_json(values: list[object]) -> tuple[object, ...]:
    details = values[12]
    payload = b"\x01" + details.encode() if isinstance(details, str) else None
    return (*values[:12], payload)


def _fsync_directory(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the file itself is synced
    finally:
        os.close(descriptor)
