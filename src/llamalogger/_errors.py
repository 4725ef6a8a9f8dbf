"""The exception hierarchy: callers catch by meaning, under one base."""

from __future__ import annotations


class LlamaLogError(Exception):
    """Base class of every error llamalogger raises on purpose."""


class ConfigurationError(LlamaLogError, ValueError):
    """The logger, the CLI or the embedded server was set up wrongly; raised at construction."""


class EmbeddedUnavailable(ConfigurationError):
    """The embedded PostgreSQL was asked for but its extra is not installed."""


class MigrationError(LlamaLogError):
    """The schema cannot be migrated as asked (unknown target, newer schema than this package)."""


class SchemaNotMigrated(LlamaLogError):
    """The schema is missing or older than this package needs: run `llamalog migrate`."""


class ConnectionFailed(LlamaLogError):
    """``LlamaLogger.check()`` could not connect: the host, the login or the database is
    wrong, or the server does not answer. The message names the fix; never a password."""
