"""``connect_options``: checked when the logger is made, before anything starts, and turned
into the writer's connection options (its defaults, where the DSN and the caller are silent)."""

from __future__ import annotations

from typing import Any

import pytest

from llamalogger import ConfigurationError, LlamaLogger
from llamalogger._pipeline.connect_options import checked_connect_options, writer_options

DSN = "postgresql://u@127.0.0.1:1/db"  # nothing listens: these tests never connect


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["keepalives", 1], "must be a mapping"),
        ({"autocommit": False}, "'autocommit'"),
        ({"row_factory": None}, "'row_factory'"),
        ({"host": "elsewhere"}, "'host'.*in the DSN"),
        ({"dbname": "other"}, "'dbname'.*in the DSN"),
        ({"no_such_option": 1}, "'no_such_option'"),
        ({"prepare_threshold": -1}, "prepare_threshold"),
        ({"prepare_threshold": "5"}, "prepare_threshold"),
        ({1: 2}, "option names are strings"),
    ],
)
def test_a_wrong_connect_option_is_refused_by_name(options: Any, named: str) -> None:
    """A non-mapping, an option the writer owns, one that says where rows go (the DSN's
    job), an unknown libpq option or a bad ``prepare_threshold``: ConfigurationError."""
    with pytest.raises(ConfigurationError, match=named):
        LlamaLogger(DSN, connect_options=options)


def test_connect_options_with_a_pool_are_refused() -> None:
    """A borrowed pool's connections are configured by the pool's owner."""
    with pytest.raises(ConfigurationError, match="connect_options"):
        LlamaLogger(pool=object(), connect_options={"keepalives": 1})  # type: ignore[arg-type]


def test_connect_options_and_pool_kwargs_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="connect_options only"):
        LlamaLogger(DSN, connect_options={}, pool_kwargs={"kwargs": {}})


def test_the_writer_uses_no_prepared_statements_unless_asked() -> None:
    """By default nothing is prepared on the server (a pooler may share its connections);
    the caller's options win over the defaults, the DSN's over both, autocommit always."""
    options = writer_options(DSN, checked_connect_options({"application_name": "svc"}))
    assert options["prepare_threshold"] is None
    assert (options["application_name"], options["autocommit"]) == ("svc", True)
    assert writer_options(DSN, {"prepare_threshold": 5})["prepare_threshold"] == 5
    in_dsn = writer_options(DSN + "?connect_timeout=9", {})
    assert "connect_timeout" not in in_dsn  # the DSN's own value stands


def test_libpq_options_pass_the_check() -> None:
    given = {"keepalives_idle": 30, "sslmode": "prefer", "options": "-c work_mem=64MB"}
    assert checked_connect_options(given) == given
