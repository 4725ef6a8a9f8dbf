"""Schema administration: migrate a database, read its version, backfill root_job_id.

Apart from the logging API on purpose: these functions are run by whoever deploys (or by
``llamalog migrate`` / ``llamalog backfill``), not by the code that logs::

    from llamalogger.schema import current_version, migrate

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, schema="llamalog")

The names below used to be imported from ``llamalogger`` itself; that still works, with a
``DeprecationWarning``, until the next release.
"""

from __future__ import annotations

from .._errors import MigrationError
from ._backfill import BackfillReport, Progress
from ._files import LATEST_VERSION, Migration, Step, StepMode, available_migrations
from ._plan import (
    MigrationPlan,
    PlannedStep,
    backfill_available,
    current_version,
    plan_migration,
    require_current,
)
from ._progress import ProgressDisplay
from ._runner import MigrateResult, backfill_root_job_id, migrate

__all__ = [
    "LATEST_VERSION",
    "BackfillReport",
    "MigrateResult",
    "Migration",
    "MigrationError",
    "MigrationPlan",
    "PlannedStep",
    "Progress",
    "ProgressDisplay",
    "Step",
    "StepMode",
    "available_migrations",
    "backfill_available",
    "backfill_root_job_id",
    "current_version",
    "migrate",
    "plan_migration",
    "require_current",
]
