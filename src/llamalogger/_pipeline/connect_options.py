"""The options of the writer's own connection: its defaults, the ones it must own, and the
check of what a caller passes as ``connect_options`` (before anything starts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .._errors import ConfigurationError

__all__ = ["DEFAULTS", "OWNED", "checked_connect_options", "writer_options"]

CONNECT_TIMEOUT = 2  # libpq's smallest; the retry schedule decides how soon to try again

# The writer's connection, unless the DSN or connect_options say otherwise.
DEFAULTS: dict[str, Any] = {
    "application_name": "llamalogger",
    "connect_timeout": CONNECT_TIMEOUT,
    # A peer that vanishes without closing is noticed in seconds, not hours.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    # No server-side prepared statements: behind PgBouncer in transaction mode the next
    # transaction may run on a server connection where a statement of that name belongs
    # to another client, or does not exist.
    "prepare_threshold": None,
}

# What the writer relies on: a COPY in autocommit is its own transaction, and its queries
# read tuples with the default adapters.
OWNED = {
    "autocommit": "the writer's COPY runs in autocommit, one transaction per batch",
    "row_factory": "the writer reads its own queries' rows",
    "cursor_factory": "the writer reads its own queries' rows",
    "context": "the writer's COPY needs the default adapters",
}
# Where rows go is the DSN's to say: the spill directory and target() are named after it.
_TARGET = ("host", "hostaddr", "port", "dbname", "user", "service")
_PYTHON_LEVEL = ("prepare_threshold",)


def checked_connect_options(options: object, name: str = "connect_options") -> dict[str, Any]:
    """``options`` as a plain dict, or ``ConfigurationError`` naming what is wrong: not a
    mapping, a key that is not a string, an option the writer owns, one that names where
    rows go, an unknown libpq option or an invalid ``prepare_threshold``."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigurationError(
            f"{name} must be a mapping of connection options, not {type(options).__name__}"
        )
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str):
            raise ConfigurationError(f"{name}: option names are strings, not {key!r:.40}")
        if key in OWNED:
            raise ConfigurationError(
                f"{name}[{key!r}]: the logger sets this option itself ({OWNED[key]})"
            )
        if key in _TARGET:
            raise ConfigurationError(f"{name}[{key!r}]: say where rows go in the DSN instead")
        if key == "prepare_threshold":
            if value is not None and (type(value) is not int or value < 0):
                raise ConfigurationError(
                    f"{name}['prepare_threshold'] must be None or an int of at least 0, "
                    f"not {value!r:.40}"
                )
        elif key not in _PYTHON_LEVEL:
            try:
                make_conninfo("", **{key: value})
            except psycopg.ProgrammingError as exc:
                raise ConfigurationError(f"{name}[{key!r}]: {exc}") from None
        checked[key] = value
    return checked


def writer_options(conninfo: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``psycopg.connect`` for the writer: the defaults, except
    where the DSN or ``given`` (checked ``connect_options``) say otherwise; then autocommit."""
    in_dsn = conninfo_to_dict(conninfo)
    options = {key: value for key, value in DEFAULTS.items() if key not in in_dsn}
    options.update(given)
    options["autocommit"] = True
    return options
