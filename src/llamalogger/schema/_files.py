"""The shipped migration files and their steps.

A file is a list of steps, each introduced by a ``-- step: NAME | MODE | LOCK`` line (a file
without one is a single transaction step); MODE is one of :class:`StepMode`.
"""

from __future__ import annotations

import enum
import functools
import re
from importlib import resources

import attrs

from .._errors import MigrationError

__all__ = [
    "LATEST_VERSION",
    "Migration",
    "Step",
    "StepMode",
    "available_migrations",
    "migration_step",
]

#: The newest schema version this package ships (a test keeps it equal to the last file).
LATEST_VERSION = "0007"

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_STEP_LINE = re.compile(
    r"^-- step: (?P<name>[a-z0-9_]+) \| (?P<mode>transaction|concurrently|backfill)"
    r" \| (?P<lock>.+)$",
    re.MULTILINE,
)


class StepMode(enum.StrEnum):
    """How the runner runs a step (a ``str``, so ``step.mode == "backfill"`` still holds)."""

    #: In a transaction of its own, under a short ``lock_timeout``, retried with backoff.
    TRANSACTION = "transaction"
    #: One ``CREATE INDEX CONCURRENTLY`` outside a transaction.
    CONCURRENTLY = "concurrently"
    #: The batched root_job_id backfill; the step's SQL is only comments.
    BACKFILL = "backfill"


@attrs.frozen
class Step:
    """One step of a migration: its name, how it runs, and the lock it takes (for the plan)."""

    name: str
    mode: StepMode = attrs.field(converter=StepMode)
    lock: str
    sql: str = attrs.field(repr=False)


@attrs.frozen
class Migration:
    """One versioned SQL file; ``0002_root_job_id.sql`` is version ``0002``, ``root_job_id``."""

    version: str
    name: str
    sql: str = attrs.field(repr=False)
    #: The file's steps in order (one ``transaction`` step for a file without step lines).
    steps: tuple[Step, ...] = attrs.field(
        repr=False,
        default=attrs.Factory(lambda self: _parse_steps(self.name, self.sql), takes_self=True),
    )


def _parse_steps(name: str, text: str) -> tuple[Step, ...]:
    headers = list(_STEP_LINE.finditer(text))
    if not headers:
        return (Step(name, StepMode.TRANSACTION, "as the file says", text),)
    steps = []
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        body = text[header.end() : following.start() if following else len(text)]
        steps.append(Step(header["name"], header["mode"], header["lock"].strip(), body))
    return tuple(steps)


@functools.cache
def available_migrations() -> tuple[Migration, ...]:
    """The migrations shipped in ``llamalogger.schema.migrations``, sorted by version."""
    found: dict[str, Migration] = {}
    for entry in resources.files("llamalogger.schema.migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        version = match["version"]
        if version in found:
            # A packaging mistake; applying either file silently would be worse.
            raise MigrationError(f"two migration files share version {version}")
        found[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return tuple(found[version] for version in sorted(found))


def migration_step(version: str, step: str) -> Step:
    """The step named ``step`` of the shipped migration ``version``."""
    for migration in available_migrations():
        if migration.version == version:
            for candidate in migration.steps:
                if candidate.name == step:
                    return candidate
    raise MigrationError(f"no step {step!r} in migration {version}")  # a packaging mistake
