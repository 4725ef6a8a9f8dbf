"""Connection strings and schema names: the defaults, the environment, validation, masking.

Every wing (the writer, schema administration, the queries, the CLI) takes its defaults and
checks from here, so ``LLAMALOG_DSN``, ``LLAMALOG_SCHEMA`` and ``"llamalog"`` are each
spelled once.
"""

from __future__ import annotations

import os

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ._errors import ConfigurationError

__all__ = [
    "DEFAULT_SCHEMA",
    "DSN_ENV",
    "SCHEMA_ENV",
    "check_conninfo",
    "dsn_from_env",
    "masked_conninfo",
    "schema_from_env",
    "scrub",
    "validate_schema",
]

DEFAULT_SCHEMA = "llamalog"
DSN_ENV = "LLAMALOG_DSN"
SCHEMA_ENV = "LLAMALOG_SCHEMA"
_MAX_IDENTIFIER_LENGTH = 63  # PostgreSQL's NAMEDATALEN - 1


def dsn_from_env(dsn: str | None = None) -> str | None:
    """``dsn`` if given (non-empty), else ``$LLAMALOG_DSN``, else ``None``."""
    return dsn or os.environ.get(DSN_ENV) or None


def schema_from_env(schema: str | None = None) -> str:
    """``schema`` if given, else ``$LLAMALOG_SCHEMA``, else ``llamalog``."""
    if schema is not None:
        return schema
    return os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA


def validate_schema(schema: object) -> str:
    """``schema`` if it is a usable schema name, else ``ConfigurationError``."""
    if not isinstance(schema, str) or not schema:
        raise ConfigurationError(f"schema must be a non-empty str, not {schema!r}")
    # PostgreSQL would silently truncate a longer name; refuse it instead.
    if len(schema.encode("utf-8", "surrogatepass")) > _MAX_IDENTIFIER_LENGTH:
        raise ConfigurationError(
            f"schema name {schema!r} is longer than PostgreSQL's "
            f"{_MAX_IDENTIFIER_LENGTH}-byte identifier limit"
        )
    if "\x00" in schema:
        raise ConfigurationError("schema name must not contain NUL characters")
    return schema


def masked_conninfo(conninfo: str) -> str:
    """``conninfo`` with any password replaced by ``***``, for reprs and messages."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparsable conninfo>"
    if "password" in params:
        params["password"] = "***"  # noqa: S105 - a mask, not a secret
    return make_conninfo("", **params)


def check_conninfo(conninfo: str) -> None:
    """``ConfigurationError`` if ``conninfo`` cannot be parsed.

    The parser's own message quotes the offending part, which may be the password, so it
    is not passed on.
    """
    try:
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        raise ConfigurationError(
            "invalid DSN: it could not be parsed (it is not shown, as it may hold a password)"
        ) from None


def scrub(text: str, conninfo: str) -> str:
    """``text`` with ``conninfo`` and any password in it replaced by their masked form."""
    text = text.replace(conninfo, masked_conninfo(conninfo))
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.ProgrammingError:
        return text
    if isinstance(password, str) and password:
        text = text.replace(password, "***")
    return text
