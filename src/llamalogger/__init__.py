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
from ._records import Category, Entity, JobStatus

__version__ = "0.1.0"

__all__ = [
    "Category",
    "ConfigurationError",
    "EmbeddedUnavailable",
    "Entity",
    "JobContext",
    "JobScope",
    "JobStatus",
    "LlamaLogError",
    "LlamaLogger",
    "MigrationError",
    "SchemaNotMigrated",
    "bind_job",
    "current_job",
    "new_job_id",
]

# Schema administration moved to llamalogger.schema; the old names work for one more release.
_MOVED_TO_SCHEMA = frozenset(
    {"BackfillReport", "MigrateResult", "backfill_root_job_id", "current_version", "migrate"}
)


def __getattr__(name: str) -> object:
    if name in _MOVED_TO_SCHEMA:
        import warnings

        from . import schema

        warnings.warn(
            f"llamalogger.{name} is deprecated and will be removed in the next release: "
            f"use llamalogger.schema.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(schema, name)
    raise AttributeError(f"module 'llamalogger' has no attribute {name!r}")
