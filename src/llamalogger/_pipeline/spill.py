"""Spill files: batches kept on local disk while the database is unreachable.

One file per batch, written to a temporary name, fsynced and renamed, so a file that
exists is complete. Its first line names the database it belongs to (host, port,
database, schema; never a password), and it is only replayed there. Names start with
the time the batch was taken from the queue, in nanoseconds, so sorting them replays
batches in the order they were logged, across processes and restarts. A replaying
process first claims a file by renaming it; a file another process claimed first is
simply skipped, and the file name is the id that makes a replay happen exactly once
(see migration 0003). A line is one row, an event's or a job's, with its details last.
Files are 0600 in 0700 directories: events may hold personal data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson

__all__ = [
    "SpillDir",
    "SpillFile",
    "SpillFull",
    "SpillRows",
    "SpillUnreadable",
    "default_spill_root",
    "set_aside_files",
    "taken_at",
    "target_dirname",
    "waiting_files",
]

_SUFFIX = ".jsonl"
_CLAIMED = ".claimed-"
_PARTIAL = ".partial"
# What set_aside() appends: a file a person has to look at, never replayed.
_SET_ASIDE = (".rejected", ".unreadable")
_FORMAT = 1


class SpillFull(Exception):
    """Writing this batch would take the directory past its size cap."""


class SpillUnreadable(Exception):
    """A spill file holds something that is not a row (``spill_id`` names the file): it is
    set aside for a person, never retried."""

    def __init__(self, spill_id: str, why: str) -> None:
        super().__init__(f"spill file {spill_id}: {why}")
        self.spill_id = spill_id


def default_spill_root() -> Path:
    """The per-user state directory for spill files (XDG state home)."""
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state_home) / "llamalogger" / "spill"


def target_dirname(target: Mapping[str, str]) -> str:
    """A directory name of its own for each target database and schema."""
    readable = "_".join(target.get(key, "") for key in ("host", "port", "dbname", "schema"))
    readable = re.sub(r"[^A-Za-z0-9.-]+", "-", readable)[:80]
    digest = hashlib.sha256(json.dumps(dict(target), sort_keys=True).encode()).hexdigest()[:10]
    return f"{readable}-{digest}"


@attrs.frozen
class SpillFile:
    """A spill file on disk: ``path`` as found, ``spill_id`` the name it was written under."""

    path: Path
    spill_id: str


class SpillDir:
    """A directory of spill files for one target database and schema."""

    def __init__(
        self, path: str | os.PathLike[str], target: Mapping[str, str], max_bytes: int
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.stat().st_mode & 0o077:
            os.chmod(self.path, 0o700)
        self.target = dict(target)
        self.max_bytes = max_bytes
        self._counter = itertools.count()
        # Claims name the process and this object: two loggers of one process sharing a
        # directory must not mistake each other's claims for their own.
        self._claimant = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._foreign: set[str] = set()  # files written for another target: never ours
        self._stored: set[str] = set()  # replayed files the disk would not let us remove
        self._sweep_partial_files()
        self._check_writable()
        self._bytes = sum(_size(file) for file in self.path.glob("*" + _SUFFIX + "*"))

    def _check_writable(self) -> None:
        """Create and remove a file, so that a directory on a read-only or failing
        filesystem is refused (``OSError``) at start, not found out in the first outage."""
        # Named as a partial file of this process: never replayed, and swept at the next
        # start should this process die before removing it.
        probe = self.path / f"{0:020d}-{os.getpid()}-{secrets.token_hex(3)}{_SUFFIX}{_PARTIAL}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()

    def _sweep_partial_files(self) -> None:
        """Remove what writers that died mid-write left: a partial file is never replayed,
        and would hold its bytes against the cap for good."""
        for path in self.path.glob("*" + _SUFFIX + _PARTIAL):
            # spill id: <time>-<pid>-<counter>
            parts = path.name.removesuffix(_SUFFIX + _PARTIAL).split("-")
            pid = parts[1] if len(parts) == 3 else ""
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    path.unlink()

    def write(self, rows: list[tuple[object, ...]], taken_ns: int) -> SpillFile:
        """Store ``rows`` durably in a new file named for ``taken_ns``; ``SpillFull`` if
        that would pass the size cap."""
        header = {"llamalogger_spill": _FORMAT, "target": self.target}
        lines = [json.dumps(header)]
        lines.extend(json.dumps(_to_json(row), ensure_ascii=False) for row in rows)
        data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
        if self._bytes + len(data) > self.max_bytes:
            raise SpillFull(f"{self._bytes + len(data)} bytes would pass {self.max_bytes}")
        spill_id = f"{taken_ns:020d}-{os.getpid()}-{next(self._counter):06d}"
        final = self.path / (spill_id + _SUFFIX)
        partial = self.path / (spill_id + _SUFFIX + _PARTIAL)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            partial.replace(final)
        except BaseException:
            # A full or failing disk: what was written of the file goes, so that it holds
            # no space (and no bytes against the cap) once the disk has room again.
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        _fsync_directory(self.path)
        self._bytes += len(data)
        return SpillFile(final, spill_id)

    def pending(self) -> list[SpillFile]:
        """Files this process may replay, oldest first: unclaimed ones, its own claims, and
        claims of processes that no longer exist."""
        found = [
            file
            for file, claimant in waiting_files(self.path)
            if (self._may_take(claimant) if claimant else file.spill_id not in self._foreign)
        ]
        return sorted(found, key=lambda file: file.spill_id)

    def _may_take(self, claimant: str) -> bool:
        """A claim is ours to replay if we made it, or if the process that made it is gone."""
        if claimant == self._claimant:
            return True
        pid = claimant.partition("-")[0]
        return pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))

    def release(self, file: SpillFile) -> None:
        """Give a claimed file back, for the next attempt of any logger."""
        with contextlib.suppress(FileNotFoundError):
            file.path.rename(self.path / f"{file.spill_id}{_SUFFIX}")

    def leave_alone(self, file: SpillFile) -> None:
        """Give back a file written for another target, and skip it from now on."""
        self._foreign.add(file.spill_id)
        self.release(file)

    def claim(self, file: SpillFile) -> SpillFile | None:
        """Rename ``file`` to this process's claim; ``None`` if another process took it."""
        claimed = self.path / f"{file.spill_id}{_SUFFIX}{_CLAIMED}{self._claimant}"
        if file.path == claimed:
            return file
        try:
            file.path.rename(claimed)
        except FileNotFoundError:
            return None
        return SpillFile(claimed, file.spill_id)

    def read(self, file: SpillFile) -> tuple[dict[str, str] | None, list[tuple[object, ...]]]:
        """The target a file was written for (``None``: a file of llamalogger 0.1), its rows;
        ``SpillUnreadable`` if a line is not a row."""
        target, rows = self.open(file)
        return target, list(rows)

    def open(self, file: SpillFile) -> tuple[dict[str, str] | None, SpillRows]:
        """The target a file was written for (``None``: a file of llamalogger 0.1), and its
        rows, counted now but parsed only as they are taken (as a COPY takes them)."""
        data = file.path.read_bytes()
        lines = [line for line in data.split(b"\n") if line.strip()]
        target: dict[str, str] | None = None
        if lines and lines[0].lstrip().startswith(b"{"):
            try:
                header = _loads(lines[0])
                target = dict(header["target"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SpillUnreadable(file.spill_id, f"its header: {exc}") from exc
            del lines[0]
        return target, SpillRows(file.spill_id, lines)

    def remove(self, file: SpillFile) -> None:
        size = _size(file.path)
        try:
            file.path.unlink(missing_ok=True)
        except OSError:
            # Its rows are stored, with its replay mark: it needs removing, not replaying.
            self._stored.add(file.spill_id)
            raise
        self._stored.discard(file.spill_id)
        self._bytes = max(0, self._bytes - size)

    def stored(self, file: SpillFile) -> bool:
        """Whether ``file`` was replayed by this process and only its removal failed."""
        return file.spill_id in self._stored

    def set_aside(self, file: SpillFile, why: str) -> Path:
        """Move a file that cannot be replayed out of the way, keeping it for a person."""
        target = self.path / f"{file.spill_id}{_SUFFIX}.{why}"
        file.path.replace(target)
        self._bytes = max(0, self._bytes - _size(target))
        return target

    def state(self, spill_id: str) -> str:
        """``pending`` (still to replay), ``rejected`` (set aside) or ``gone`` (replayed)."""
        for path in self.path.glob(f"{spill_id}{_SUFFIX}*"):
            if path.name.endswith(_SET_ASIDE):
                return "rejected"
            if not path.name.endswith(_PARTIAL):
                return "pending"
        return "gone"


def waiting_files(directory: Path) -> Iterator[tuple[SpillFile, str]]:
    """The files of ``directory`` that wait to be replayed, each with the process that
    claimed it (``""``: none): ``ID.jsonl`` and ``ID.jsonl.claimed-WHO``."""
    for path in directory.iterdir():
        name = path.name
        if name.endswith(_SUFFIX):
            yield SpillFile(path, name.removesuffix(_SUFFIX)), ""
            continue
        base, claimed, claimant = name.rpartition(_CLAIMED)
        if claimed and base.endswith(_SUFFIX):
            yield SpillFile(path, base.removesuffix(_SUFFIX)), claimant


def set_aside_files(directory: Path) -> list[Path]:
    """The files of ``directory`` set aside as unreadable or refused, for a person."""
    return [path for path in directory.iterdir() if path.name.endswith(_SET_ASIDE)]


def taken_at(spill_id: str) -> dt.datetime | None:
    """When the batch of spill file ``spill_id`` was taken from its queue: its name starts
    with that time, in nanoseconds. ``None`` for a name that does not."""
    stamp = spill_id.partition("-")[0]
    if not stamp.isdigit():
        return None
    return dt.datetime.fromtimestamp(int(stamp) / 1e9, tz=dt.UTC)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def _to_json(row: tuple[object, ...]) -> list[object]:
    # The details are last in either kind of row (an event's 13 fields, a job's 16).
    details = row[-1]
    # Drop jsonb's version byte; the text goes back into the file as a JSON string.
    encoded = bytes(details)[1:].decode() if isinstance(details, bytes | bytearray) else None
    return [*row[:-1], encoded]


class SpillRows(Sequence[tuple[object, ...]]):
    """The rows of one spill file, each parsed when it is first taken.

    A replay streams them into its COPY: parsing a whole file first kept the server idle
    meanwhile (28 % of a replay's time), where now it works on the first rows while the
    writer parses the next ones. Parsed rows are kept, so a retry parses nothing twice. The
    rows are counted without parsing them (their lines), for the file's replay mark.
    """

    __slots__ = ("_lines", "_rows", "spill_id")

    def __init__(self, spill_id: str, lines: list[bytes]) -> None:
        self.spill_id = spill_id
        self._lines = lines
        self._rows: list[tuple[object, ...]] = []

    def __len__(self) -> int:
        return len(self._lines)

    def __getitem__(self, index: Any) -> Any:
        for _ in self:  # parse them all
            pass
        return self._rows[index]

    def __iter__(self) -> Iterator[tuple[object, ...]]:
        rows = self._rows
        yield from rows[:]  # those an earlier pass parsed already
        append = rows.append
        for number in range(len(rows), len(self._lines)):
            try:
                row = _from_json(_loads(self._lines[number]))
            except (ValueError, TypeError) as exc:
                raise SpillUnreadable(self.spill_id, f"row {number + 1}: {exc!r}") from exc
            append(row)
            yield row


def _loads(line: bytes) -> Any:
    try:
        return orjson.loads(line)  # several times faster than json, and it is per row
    except orjson.JSONDecodeError:
        # What orjson refuses and json reads: lone surrogates (written with surrogatepass),
        # ints past 64 bits.
        return json.loads(line)


def _from_json(values: Any) -> tuple[object, ...]:
    if values.__class__ is not list or not values:
        raise TypeError(f"a row is a non-empty JSON array, not {type(values).__name__}")
    details = values[-1]
    # The parsed list is ours: its details become jsonb's binary form in place.
    values[-1] = b"\x01" + details.encode() if details.__class__ is str else None
    return tuple(values)


def _fsync_directory(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        os.fsync(descriptor)
    os.close(descriptor)
