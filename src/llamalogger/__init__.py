"""llamalogger: structured, job-aware event logging into PostgreSQL for catalogue workers.

::

    from llamalogger import LlamaLogger, Category

    logger = LlamaLogger("postgresql://app@db/catalog")
    with logger.job("import-album"):
        logger.created(("album", 12))
        with logger.job("link-artist"):
            logger.linked(("artist", 7), ("album", 12))
"""

from __future__ import annotations

from ._context import JobContext, JobScope, bind_job, current_job, new_job_id
from ._errors import (
    ConfigurationError,
    EmbeddedUnavailable,
    LlamaLogError,
    MigrationError,
    SchemaNotMigrated,
)
from ._logger import LlamaLogger
from ._migrate import BackfillReport, MigrateResult, backfill_root_job_id, current_version, migrate
from ._records import Category, Entity

__version__ = "0.1.0"

__all__ = [
    "BackfillReport",
    "Category",
    "ConfigurationError",
    "EmbeddedUnavailable",
    "Entity",
    "JobContext",
    "JobScope",
    "LlamaLogError",
    "LlamaLogger",
    "MigrateResult",
    "MigrationError",
    "SchemaNotMigrated",
    "backfill_root_job_id",
    "bind_job",
    "current_job",
    "current_version",
    "migrate",
    "new_job_id",
]
